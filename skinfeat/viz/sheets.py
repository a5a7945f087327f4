"""The contact sheet of near-duplicate pairs (``skinfeat data duplicates --sheet``): each
pair side by side with its similarity and verdict.
"""
from skinfeat.core.errors import DataError
from skinfeat.imaging.images import decode
from skinfeat.viz.plots import save_figure

SHEET_PAIRS = 12


def contact_sheet(rows, paths, out, n=SHEET_PAIRS):
    """Draw the first ``n`` pairs side by side (``paths``: {image id: file}) and write ``out``."""
    from matplotlib.figure import Figure


    rows = rows[:n]
    fig = Figure(figsize=(6, 3 * max(1, len(rows))), dpi=100, layout="constrained")
    for i, row in enumerate(rows):
        for j, side in enumerate("ab"):
            ax = fig.add_subplot(max(1, len(rows)), 2, 2 * i + j + 1)
            ax.set_axis_off()
            image_id = row["image_" + side]
            try:
                ax.imshow(decode(paths[image_id]))
            except (KeyError, DataError):
                ax.text(0.5, 0.5, "image not found" if image_id not in paths else "unreadable", ha="center")
            ax.set_title(f"{image_id} ({row['lesion_' + side]})" + (f"\n{row['similarity']:.4f} {row['verdict']}"
                                                                    if side == "a" else "\n"), fontsize=8, loc="left")
    if not rows:
        fig.text(0.5, 0.5, "no pairs", ha="center")
    return save_figure(fig, out)

