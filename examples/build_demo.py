"""Build examples/images, the demo collection, and examples/SOURCES.md from Caltech-101 photos.

The categories are picked so that words which are not labels still find something: kinds
(bird, insect, aircraft, animal, vehicle, boat), associations (sea, food, music, flower).
Within a category the photos are taken in file-name order, colour ones first, so the
same sources always give the same collection. The files are copied byte for byte;
some get an EXIF segment (a date and, for most, a GPS position near a place that fits
the subject) spliced in without re-encoding, so the date filter, the place filter and a
map have something to show. Those dates and places are made up for the demo.

    python examples/build_demo.py --replace     # sources in ../shared/data (as in the Makefile)
"""

from __future__ import annotations

import argparse
import datetime
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

HERE = Path(__file__).resolve().parent
SOURCES = (
    HERE.parents[1] / "shared" / "data" / "caltech101-dev",
    HERE.parents[1] / "shared" / "data" / "caltech101-dev2",
)
PER_LABEL = 13
WITH_EXIF = 4  # the first photos of a category in TRIPS
LABELS = (
    "airplanes", "helicopter", "rooster", "flamingo_head", "butterfly", "mayfly", "elephant", "kangaroo", "llama",
    "dolphin", "starfish", "crab", "ferry", "ketch", "car_side", "pizza", "sunflower", "grand_piano", "electric_guitar",
)  # fmt: skip
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 36867, 36881


@dataclass(frozen=True)
class Trip:
    """Where and when the demo says a category's photos were taken (place None: no GPS)."""

    place: str | None
    lat: float
    lon: float
    first_day: datetime.date
    days: int
    utc_offset: str


def _trip(place: str | None, lat: float, lon: float, day: str, days: int, offset: str) -> Trip:
    return Trip(place, lat, lon, datetime.date.fromisoformat(day), days, offset)


TRIPS = {
    "ferry": _trip("Sydney Harbour, Australia", -33.8587, 151.2140, "2023-03-11", 3, "+11:00"),
    "kangaroo": _trip("Tidbinbilla, Australia", -35.4478, 148.9339, "2023-03-14", 2, "+11:00"),
    "airplanes": _trip("San Francisco airport, USA", 37.6190, -122.3750, "2022-08-06", 1, "-07:00"),
    "dolphin": _trip("Monterey Bay, USA", 36.8007, -121.9473, "2022-08-07", 2, "-07:00"),
    "starfish": _trip("Point Lobos, USA", 36.5159, -121.9426, "2022-08-09", 1, "-07:00"),
    "crab": _trip("Half Moon Bay, USA", 37.4636, -122.4286, "2022-08-10", 2, "-07:00"),
    "ketch": _trip("Falmouth harbour, UK", 50.1530, -5.0580, "2021-07-17", 4, "+01:00"),
    "elephant": _trip("Amboseli, Kenya", -2.6527, 37.2606, "2020-02-03", 3, "+03:00"),
    "llama": _trip("Cusco, Peru", -13.5320, -71.9675, "2019-10-22", 3, "-05:00"),
    "flamingo_head": _trip("Camargue, France", 43.5050, 4.4570, "2024-07-06", 2, "+02:00"),
    "sunflower": _trip("Val d'Orcia, Italy", 43.0700, 11.6800, "2024-07-09", 2, "+02:00"),
    "pizza": _trip("Naples, Italy", 40.8518, 14.2681, "2024-07-12", 3, "+02:00"),
    "grand_piano": _trip("Musikverein, Vienna, Austria", 48.2006, 16.3725, "2023-12-16", 1, "+01:00"),
    "rooster": _trip(None, 0.0, 0.0, "2021-05-01", 30, "+02:00"),
    "electric_guitar": _trip(None, 0.0, 0.0, "2022-11-18", 2, "+01:00"),
}


@dataclass(frozen=True)
class Tagged:
    """The EXIF written into one demo photo."""

    path: str
    taken: datetime.datetime
    offset: str
    place: str | None
    lat: float | None
    lon: float | None


def select(sources: list[Path], label: str, n: int = PER_LABEL) -> list[Path]:
    """The first ``n`` photos of a category by file name, colour ones before greyscale ones."""
    folder = next((s / label for s in sources if (s / label).is_dir()), None)
    if folder is None:
        raise SystemExit(f"Error: no folder {label!r} in {', '.join(map(str, sources))}; pass --source")
    files = sorted(folder.glob("*.jpg"))
    colour = [f for f in files if _mode(f) == "RGB"]
    picked = (colour + [f for f in files if f not in colour])[:n]
    return sorted(picked)


def _mode(path: Path) -> str:
    with Image.open(path) as im:
        return im.mode


def made_up_exif(label: str, name: str) -> Tagged | None:
    """A date (and a position near the category's place) for a demo photo, seeded by its name."""
    trip = TRIPS.get(label)
    if trip is None:
        return None
    rng = random.Random(f"{label}/{name}")
    day = trip.first_day + datetime.timedelta(days=rng.randrange(trip.days))
    taken = datetime.datetime.combine(day, datetime.time(rng.randrange(8, 19), rng.randrange(60), rng.randrange(60)))
    if trip.place is None:
        return Tagged(f"{label}/{name}", taken, trip.utc_offset, None, None, None)
    lat, lon = trip.lat + rng.uniform(-0.01, 0.01), trip.lon + rng.uniform(-0.01, 0.01)
    return Tagged(f"{label}/{name}", taken, trip.utc_offset, trip.place, round(lat, 5), round(lon, 5))


def exif_bytes(tag: Tagged) -> bytes:
    """The EXIF block (``Exif\\0\\0`` + TIFF) with DateTimeOriginal, its offset and a GPSInfo IFD."""
    exif = Image.Exif()
    sub = exif.get_ifd(EXIF_IFD)
    sub[DATETIME_ORIGINAL] = tag.taken.strftime("%Y:%m:%d %H:%M:%S")
    sub[OFFSET_TIME_ORIGINAL] = tag.offset
    if tag.lat is not None and tag.lon is not None:
        gps = exif.get_ifd(GPS_IFD)
        gps.update({0: b"\x02\x03\x00\x00", 1: "N" if tag.lat >= 0 else "S", 2: _dms(tag.lat)})
        gps.update({3: "E" if tag.lon >= 0 else "W", 4: _dms(tag.lon)})
    return exif.tobytes()


def _dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    hundredths = round(abs(degrees) * 360000)  # of an arc second, so no part rounds up to 60
    return (
        IFDRational(hundredths // 360000, 1),
        IFDRational(hundredths // 6000 % 60, 1),
        IFDRational(hundredths % 6000, 100),
    )


def with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """The JPEG with an APP1 EXIF segment after SOI (and JFIF's APP0): pixels untouched."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:pos] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + jpeg[pos:]


def build(sources: list[Path], out: Path) -> tuple[dict[str, list[str]], list[Tagged]]:
    """Write the collection into ``out``; the file names per category and the EXIF written."""
    picked: dict[str, list[str]] = {}
    tagged: list[Tagged] = []
    for label in LABELS:
        (out / label).mkdir(parents=True)
        picked[label] = []
        for i, src in enumerate(select(sources, label)):
            data = src.read_bytes()
            tag = made_up_exif(label, src.name) if i < WITH_EXIF else None
            if tag is not None:
                data = with_exif(data, exif_bytes(tag))
                tagged.append(tag)
            (out / label / src.name).write_bytes(data)
            picked[label].append(src.name)
    return picked, tagged


SOURCES_HEAD = """\
# Example images

`examples/images/` is the demo collection that `make demo` ingests. It is written by
`examples/build_demo.py` (`python examples/build_demo.py --replace`), which also writes this file.

## Caltech-101 photos (CC BY 4.0)

{total} photos in {labels} categories of Caltech-101: L. Fei-Fei, R. Fergus and P. Perona,
*Learning generative visual models from few training examples: an incremental Bayesian
approach tested on 101 object categories*, IEEE CVPR 2004, Workshop on Generative-Model
Based Vision; dataset by Fei-Fei Li, Marco Andreetto, Marc'Aurelio Ranzato and Pietro Perona,
CaltechDATA, <https://doi.org/10.22002/D1.20086>, licensed
[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/).
`examples/images/<category>/image_NNNN.jpg` is `101_ObjectCategories/<category>/image_NNNN.jpg`
(taken from the project's copies, `caltech101-dev` and `caltech101-dev2`), byte for byte
except the photos listed under "Added for the demo".

| category | image_NNNN.jpg, NNNN = |
|---|---|
"""

SOURCES_EXIF = """
## Added for the demo: dates and places

The Caltech-101 photos carry no EXIF. To give the date filter, the place filter and the map
something to show, these {n} files got an EXIF segment (DateTimeOriginal with
OffsetTimeOriginal, and for {located} of them a GPSInfo position near a place that fits the
subject). The dates and places are made up; the pixels are unchanged.

| file | taken (local time) | place | latitude, longitude |
|---|---|---|---|
"""

SOURCES_NEW = """
## A photo that is not in the collection

`examples/new/chelsea.jpg` is for trying `similar` and `tags` on a new file.

| file | source | licence |
|---|---|---|
| `new/chelsea.jpg` | scikit-image 0.26 `skimage/data/chelsea.png`, resized to at most 640 px, JPEG | CC0, photographer Stefan van der Walt |
"""


def sources_md(picked: dict[str, list[str]], tagged: list[Tagged]) -> str:
    """The text of examples/SOURCES.md for this build."""
    total = sum(len(v) for v in picked.values())
    text = SOURCES_HEAD.format(total=total, labels=len(picked))
    for label, names in picked.items():
        numbers = ", ".join(n.removeprefix("image_").removesuffix(".jpg") for n in names)
        text += f"| `{label}` | {numbers} |\n"
    text += SOURCES_EXIF.format(n=len(tagged), located=sum(t.place is not None for t in tagged))
    for t in tagged:
        where = f"{t.lat:.5f}, {t.lon:.5f}" if t.lat is not None else "-"
        text += f"| `images/{t.path}` | {t.taken:%Y-%m-%d %H:%M:%S}{t.offset} | {t.place or '-'} | {where} |\n"
    return text + SOURCES_NEW


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, action="append", help="a Caltech-101 folder of category folders")
    parser.add_argument("--out", type=Path, default=HERE / "images", help="the collection folder to write")
    parser.add_argument("--sources-md", type=Path, default=HERE / "SOURCES.md", help="the credits file to write")
    parser.add_argument("--replace", action="store_true", help="delete --out first if it exists")
    args = parser.parse_args(argv)
    if args.out.exists():
        if not args.replace:
            print(f"Error: {args.out} exists; pass --replace to rebuild it", file=sys.stderr)
            return 1
        shutil.rmtree(args.out)
    picked, tagged = build(args.source or list(SOURCES), args.out)
    args.sources_md.write_text(sources_md(picked, tagged), encoding="utf-8")
    size = sum(f.stat().st_size for f in args.out.rglob("*.jpg"))
    print(
        f"{sum(map(len, picked.values()))} photos in {len(picked)} folders, "
        f"{size / 1e6:.1f} MB; {len(tagged)} with EXIF"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
