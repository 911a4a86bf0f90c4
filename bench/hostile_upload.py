"""What a hostile drawing costs the server: a flat, highly compressible PNG of N x N pixels sent as
the drawing pad's value through the API (as any gradio_client user can).

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Launches ``python app.py`` on loopback (bench/load_test.py's ``launch``), sends the PNG to
``/train_start`` with the data set "draw", and prints the file's size, the answer (the message,
or the start of the training status), the wall time, and the server's RSS before and after and
its peak (VmHWM, from /proc).

Usage::

    python -m bench.hostile_upload [--side 8000]
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

LSD = "LSD (Lagrangian)"


def flat_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG of any size, written row by row (a few kB for 8000 x 8000)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=8000)
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file

    from bench import load_test as load

    server = load.launch()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "flat.png"
            path.write_bytes(flat_png(args.side, args.side))
            client = Client(server.url, verbose=False)
            time.sleep(2.0)  # let the server's warm-up finish
            rss0, peak0 = server.memory_mb()
            pad = {"background": None, "layers": [], "composite": handle_file(str(path))}
            t = time.perf_counter()
            try:
                out = client.predict("draw", pad, None, LSD, 20, 64, 3e-3, 0.75, 16, 1, 0, api_name="/train_start")
                answer = "trained: " + out[3].splitlines()[0]
            except Exception as err:
                answer = f"refused: {err}"
            secs = time.perf_counter() - t
            rss1, peak1 = server.memory_mb()
            print(f"{args.side} x {args.side} flat PNG, {path.stat().st_size / 1e3:.1f} kB")
            print(answer)
            print(f"{secs:.1f} s; server RSS {rss0:.0f} -> {rss1:.0f} MB, peak {peak0:.0f} -> {peak1:.0f} MB")
            client.close()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
