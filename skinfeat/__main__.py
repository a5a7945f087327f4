from skinfeat.cli import main

main()
