"""What the pictures drawn with Pillow share: matplotlib's own font, atomic PNG files.

The gallery, the preview and the timeline are arrays of pixels, bars and a few captions:
Pillow draws them in a tenth of the time matplotlib takes (a hundred text artists for the
gallery alone), and a run never imports matplotlib (0.5-1 s).
"""

from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from runner.files import atomic


@cache
def font(size: int) -> Any:
    """DejaVu Sans at ``size`` pixels, the font matplotlib ships and the other pictures use;
    Pillow's own font where matplotlib's files cannot be found."""
    from PIL import ImageFont

    spec = find_spec("matplotlib")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def save_png(picture: Any, path: Path) -> None:
    """Write the Pillow image ``picture`` to ``path`` whole or not at all, with zlib's
    fastest level (a third of the default's time, files of about the same size)."""
    with atomic(path) as tmp:
        picture.save(tmp, format="PNG", compress_level=1)
