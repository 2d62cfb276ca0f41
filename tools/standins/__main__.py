"""`python -m tools.standins`: build (if needed) and print the stand-in image archive."""

import sys

from .build import STANDIN_IMAGES, ensure_standin_archive


def main() -> int:
    archive = ensure_standin_archive()
    print(archive)
    print("images: " + ", ".join(STANDIN_IMAGES.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
