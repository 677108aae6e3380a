"""ImageFolder: autoregressive image generation with folded tokens."""
from importlib import metadata as _metadata


def _version() -> str:
    """The installed distribution's version; from pyproject.toml when the package runs uninstalled."""
    try:
        return _metadata.version("imagefolder")
    except _metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


__version__ = _version()
