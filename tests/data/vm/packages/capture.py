"""Trim the private apt lists' Packages files to their cloud-kernel stanzas (for tests).

    python3 tests/data/vm/packages/capture.py /var/cache/tcplab/apt/lists tests/data/vm/packages

Keeps, per suite, every stanza of linux-{image,binary,modules,base}-*-cloud-amd64 (also
-dbg and the linux-image-cloud-amd64 / linux-image-X.Y-cloud-amd64 meta packages, which
the resolver must skip) and the first two other stanzas, each with the fields listed in
FIELDS. Standard library only.
"""

import re
import sys
from pathlib import Path

FIELDS = ("Package", "Source", "Version", "Installed-Size", "Depends", "Description",
          "Filename", "Size", "SHA256")
KEEP = re.compile(r"^Package: linux-(image|binary|modules|base)-(\S+-)?cloud-amd64(-dbg)?$",
                  re.M)


def main(lists: Path, out: Path) -> None:
    for path in sorted(lists.glob("*_main_binary-amd64_Packages")):
        suite = re.search(r"_dists_([^_]+)_main", path.name).group(1)
        kept, others = [], 0
        for block in path.read_text(errors="replace").split("\n\n"):
            if not block.strip():
                continue
            if not KEEP.search(block.splitlines()[0]):
                if others >= 2:
                    continue
                others += 1
            lines = [ln for ln in block.splitlines() if ln.split(":", 1)[0] in FIELDS]
            kept.append("\n".join(lines))
        (out / f"{suite}.Packages").write_text("\n\n".join(kept) + "\n")
        print(f"{suite}: {len(kept)} stanzas")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
