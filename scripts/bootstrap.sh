#!/usr/bin/env bash
# Create ./.venv and install skinfeat with everything it needs, once.
# Re-run cheaply: it reinstalls only when setup.cfg or this script changed.
# Sourced by scripts/main.sh and scripts/test.sh; needs only python3 >= 3.10
# and the package registries (PyPI; Debian for the test photos).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.skinfeat-installed"
want="$(cat "$root/setup.cfg" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "skinfeat: installing into $venv (first run takes a few minutes)" >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$root[weights,test]"
  # MobileNet v1 ships as a frozen graph inside this sdist; it only needs the file.
  "$venv/bin/python" -m pip install -q --no-deps nudity==0.2.3
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"

# Real photos for the ImageNet sanity checks of converted backbones (tests only):
# Debian's darknet package ships dog.jpg, eagle.jpg, ... under usr/share/darknet/data.
photos="$venv/share/darknet-photos"
if [ ! -f "$photos/eagle.jpg" ]; then
  tmp="$(mktemp -d)"
  ( cd "$tmp" && { apt-get download darknet >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get download darknet >/dev/null 2>&1; }; } ) \
    && dpkg-deb -x "$tmp"/darknet_*.deb "$tmp/x" \
    && mkdir -p "$photos" && cp "$tmp"/x/usr/share/darknet/data/*.jpg "$photos/" \
    || echo "skinfeat: could not fetch Debian's darknet photos; the ImageNet sanity tests will fail" >&2
  rm -rf "$tmp"
fi
export SKINFEAT_TEST_PHOTOS="$photos"

# More photos that are not dermoscopy, for the out-of-distribution benchmark and tests
# (devtools/photos.py): the sample images inside the scikit-image wheel, unpacked
# without installing scikit-image.
more="$venv/share/skimage-photos"
if [ ! -f "$more/astronaut.png" ]; then
  tmp="$(mktemp -d)"
  "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" scikit-image==0.25.2 >/dev/null 2>&1 \
    && mkdir -p "$more" \
    && "$venv/bin/python" -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [open(sys.argv[2] + '/' + n.rsplit('/', 1)[1], 'wb').write(z.read(n)) for n in z.namelist() if n.startswith('skimage/data/') and n.endswith(('.png', '.jpg')) and z.getinfo(n).file_size > 4096]" "$tmp"/scikit_image-*.whl "$more" \
    || echo "skinfeat: could not unpack scikit-image's sample photos; the out-of-distribution tests will fail" >&2
  rm -rf "$tmp"
fi
