"""The embedded default data set: emoji from two npm packages, written as an ImageFolder tree.

`build(root)` runs `npm pack` for each vendor package (npm's own registry configuration, no URL in this
code), checks the tarball against the registry's published SHA-512, composites each 64×64 PNG onto
white and writes `root/{train,val}/<category>/<vendor>_<unified>.png`. The split is decided by a hash
of the base emoji, so both vendors and every skin-tone variant of one emoji land in the same split.
`root/labels.csv` records the subcategory of every image as a secondary label.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .data import to_rgb

PACKAGES = {  # vendor → (npm package, version, licence)
    "google": ("emoji-datasource-google", "16.0.0", "Apache-2.0"),
    "twitter": ("emoji-datasource-twitter", "16.0.0", "CC-BY-4.0"),
}
SKIPPED_CATEGORIES = {"Component"}
VAL_FRACTION = 0.1
DONE_MARKER = "BUILD_COMPLETE.json"


class EmojiBuildError(RuntimeError):
    """npm failed, the tarball does not match its published checksum, or its content is unexpected."""


@dataclass(frozen=True)
class EmojiImage:
    vendor: str
    unified: str  # code points of this glyph, e.g. "1F385-1F3FB"
    base: str  # code points of the base emoji (skin-tone variants share it)
    category: str
    subcategory: str
    member: str  # path inside the tarball


def folder_name(category: str) -> str:
    """'Smileys & Emotion' → 'smileys_and_emotion'."""
    return category.lower().replace("&", "and").replace(" ", "_")


def split_of(base: str) -> str:
    """Deterministic split by hash of the base emoji's code points."""
    digest = hashlib.sha256(base.encode()).digest()
    return "val" if int.from_bytes(digest[:4], "big") / 2**32 < VAL_FRACTION else "train"


def npm_pack(package: str, version: str, dest: Path) -> tuple[Path, str]:
    """Fetch a package tarball with `npm pack`; return its path and the registry's `integrity` string."""
    if shutil.which("npm") is None:
        raise EmojiBuildError("npm is not installed; it is needed to fetch the emoji data (apt-get install npm)")
    spec = f"{package}@{version}"
    proc = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmojiBuildError(f"`npm pack {spec}` failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
    try:
        info = json.loads(proc.stdout)[0]
        return dest / info["filename"], info["integrity"]
    except (ValueError, KeyError, IndexError) as err:
        raise EmojiBuildError(f"`npm pack {spec}` printed no package record: {proc.stdout[:500]!r}") from err


def verify_integrity(tarball: Path, integrity: str) -> None:
    """Check a tarball against an SRI string `sha512-<base64>`; raise EmojiBuildError on mismatch."""
    algo, _, expected = integrity.partition("-")
    if algo != "sha512":
        raise EmojiBuildError(f"{tarball.name}: expected a sha512 integrity string, got {integrity[:20]!r}")
    actual = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if actual != expected:
        raise EmojiBuildError(f"{tarball.name}: SHA-512 mismatch (published {expected[:16]}…, got {actual[:16]}…)")


def list_images(catalogue: list[dict], vendor: str) -> list[EmojiImage]:
    """Every glyph of `vendor` in emoji.json, skin-tone variants included, minus skipped categories."""
    out = []
    flag = f"has_img_{vendor}"
    for entry in catalogue:
        if entry["category"] in SKIPPED_CATEGORIES:
            continue
        glyphs = [entry] + list(entry.get("skin_variations", {}).values())
        for glyph in glyphs:
            if glyph.get(flag):
                out.append(EmojiImage(vendor, glyph["unified"], entry["unified"], entry["category"],
                                      entry["subcategory"], f"package/img/{vendor}/64/{glyph['image']}"))
    return out


def on_white(png: bytes) -> Image.Image:
    """A PNG as RGB, alpha-composited onto white (the same conversion as the data loader's default)."""
    with Image.open(io.BytesIO(png)) as im:
        return to_rgb(im)


def _write_vendor(tarball: Path, vendor: str, root: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    with tarfile.open(tarball, "r:gz") as tar:
        listing = tar.extractfile("package/emoji.json")
        if listing is None:
            raise EmojiBuildError(f"{tarball.name}: package/emoji.json is not a regular file")
        catalogue = json.load(listing)
        for img in list_images(catalogue, vendor):
            member = tar.extractfile(img.member)
            if member is None:
                raise EmojiBuildError(f"{tarball.name}: {img.member} listed in emoji.json but missing")
            split = split_of(img.base)
            rel = Path(split) / folder_name(img.category) / f"{vendor}_{img.unified}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            on_white(member.read()).save(root / rel)
            rows.append((rel.as_posix(), img.category, img.subcategory, img.base))
    return rows


LICENSES = """# Licences of the embedded emoji data

The images in this folder are rendered from two npm packages by `imagefolder.emoji` (alpha-composited
onto white, otherwise unchanged, 64×64 px):

- Google Noto emoji, via `emoji-datasource-google@16.0.0` — Apache License 2.0.
  Copyright Google Inc.; https://github.com/googlefonts/noto-emoji
- Twitter Twemoji, via `emoji-datasource-twitter@16.0.0` — graphics licensed under CC-BY 4.0.
  Copyright Twitter, Inc. and other contributors; https://github.com/twitter/twemoji
- The catalogue (categories, subcategories) is from emoji-data by Iamcal (MIT licence).
"""


def build(root: str | Path, force: bool = False) -> dict:
    """Build the emoji ImageFolder tree at `root`; a second call finds the marker and does nothing.

    Work happens in a temporary sibling folder that replaces `root` only when complete, so a failure
    leaves no partial data set behind. Returns the summary written to `root/BUILD_COMPLETE.json`.
    """
    root = Path(root)
    marker = root / DONE_MARKER
    if marker.exists() and not force:
        summary = json.loads(marker.read_text())
        print(f"emoji data already built at {root}: {summary['images']} ({summary['counts']}); nothing to do")
        return summary
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".emoji-build-", dir=root.parent))
    try:
        rows = []
        tarballs = {}
        for vendor, (package, version, _) in PACKAGES.items():
            tarball, integrity = npm_pack(package, version, staging)
            verify_integrity(tarball, integrity)
            tarballs[vendor] = {"package": f"{package}@{version}", "integrity": integrity}
            rows += _write_vendor(tarball, vendor, staging)
            tarball.unlink()
        rows.sort()
        with open(staging / "labels.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "category", "subcategory", "base"])
            writer.writerows(rows)
        (staging / "LICENSES.md").write_text(LICENSES)
        counts = {split: sum(1 for r in rows if r[0].startswith(split + "/")) for split in ("train", "val")}
        summary = {
            "images": counts,
            "counts": {"categories": len({r[1] for r in rows}), "subcategories": len({r[2] for r in rows}),
                       "base_emoji": len({r[3] for r in rows})},
            "packages": tarballs,
            "fingerprint": hashlib.sha256("\n".join(",".join(r) for r in rows).encode()).hexdigest()[:16],
        }
        (staging / DONE_MARKER).write_text(json.dumps(summary, indent=2))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"built emoji data at {root}: {summary['images']} images, {summary['counts']}")
    return summary
