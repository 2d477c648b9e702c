"""Fuzz every reader of hrtem_core.io with structure-aware mutations of small valid files.

Seeds: small valid files written here for every format (TIFF, PNG, JPEG, BMP, GIF, Berkeley EMD,
Velox EMD, MRC, a hand-built DM3 and DM4) plus, when ``../shared/fixtures`` is present, the small
real DM3/DM4/SER(+EMI)/TIFF/EMD/MRC files. Mutations know where each format keeps its numbers:
they overwrite header words with boundary values (0, 1, -1, 2^31-1, 2^32-1, huge), flip bits,
truncate, duplicate or drop blocks, and for HDF5 they also rewrite shapes, chunking, attributes
and links through h5py.

Every input must end within its budget as a valid image or a one-line
:class:`~hrtem_core.errors.HRTEMError`; anything else (another exception, a multi-line message,
a read past the budget) is a finding and is written to ``--out``.

Usage::

    python scripts/fuzz_readers.py --seconds 600 --seed 1 --out fuzz-findings
    python scripts/fuzz_readers.py --iterations 200 --format tiff --isolate

``--isolate`` reads each input in a child process under a 3 GiB address-space limit
(:func:`hrtem_core.io.load_image_isolated`), so that a hang or a memory blow-up is caught too.
The seeded short corpus of ``tests/test_fuzz_readers.py`` uses the same functions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Boundary values written into header words.
INTERESTING = (0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20, 10**6, 8193)


# ------------------------------------------------------------------------------------------
# Seeds
# ------------------------------------------------------------------------------------------


def _image(shape: tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (100 + 40 * np.cos(yy / 2.0) * np.cos(xx / 3.0) + rng.normal(0, 2, shape)).astype(
        np.float32
    )


def _dm_tag(name: bytes, payload: bytes, version: int) -> bytes:
    head = b"\x15" + struct.pack(">H", len(name)) + name
    body = b"%%%%" + payload
    if version == 4:
        head += struct.pack(">Q", len(body))
    return head + body


def _dm_group(name: bytes, entries: list[bytes], version: int) -> bytes:
    count = struct.pack(">I" if version == 3 else ">Q", len(entries))
    head = b"\x14" + struct.pack(">H", len(name)) + name
    body = b"\x00\x01" + count + b"".join(entries)
    if version == 4:
        head += struct.pack(">Q", len(body))
    return head + body


def write_dm(path: Path, image: np.ndarray, *, version: int = 3, scale_nm: float = 0.02) -> Path:
    """A minimal DigitalMicrograph file with one float32 image and an nm calibration."""
    w = ">I" if version == 3 else ">Q"

    def simple(code: int, fmt: str, value: float) -> bytes:
        return struct.pack(w, 1) + struct.pack(w, code) + struct.pack("<" + fmt, value)

    def string(text: str) -> bytes:  # an array of uint16 characters
        raw = text.encode("utf-16-le")
        return (
            struct.pack(w, 3)
            + struct.pack(w, 20)
            + struct.pack(w, 4)
            + struct.pack(w, len(text))
            + raw
        )

    ny, nx = image.shape
    data = image.astype("<f4").tobytes()
    calibration = [
        _dm_group(
            b"",
            [
                _dm_tag(b"Origin", simple(6, "f", 0.0), version),
                _dm_tag(b"Scale", simple(6, "f", scale_nm), version),
                _dm_tag(b"Units", string("nm"), version),
            ],
            version,
        )
        for _ in range(2)
    ]
    array = (
        struct.pack(w, 3) + struct.pack(w, 20) + struct.pack(w, 6) + struct.pack(w, nx * ny) + data
    )
    image_entry = _dm_group(
        b"",
        [
            _dm_group(
                b"ImageData",
                [
                    _dm_group(
                        b"Calibrations", [_dm_group(b"Dimension", calibration, version)], version
                    ),
                    _dm_tag(b"Data", array, version),
                    _dm_tag(b"DataType", simple(3, "i", 2), version),
                    _dm_group(
                        b"Dimensions",
                        [
                            _dm_tag(b"", simple(5, "I", nx), version),
                            _dm_tag(b"", simple(5, "I", ny), version),
                        ],
                        version,
                    ),
                    _dm_tag(b"PixelDepth", simple(3, "i", 4), version),
                ],
                version,
            ),
        ],
        version,
    )
    root = b"\x00\x01" + struct.pack(w, 1) + _dm_group(b"ImageList", [image_entry], version)
    header = struct.pack(">I", version) + struct.pack(w, len(root) + 8) + struct.pack(">I", 1)
    path.write_bytes(header + root + b"\x00" * 8)
    return path


def write_mrc(path: Path, image: np.ndarray, *, voxel_a: float = 0.2) -> Path:
    ny, nx = image.shape
    header = bytearray(1024)
    struct.pack_into("<3i", header, 0, nx, ny, 1)
    struct.pack_into("<i", header, 12, 2)
    struct.pack_into("<3i", header, 28, nx, ny, 1)
    struct.pack_into("<3f", header, 40, nx * voxel_a, ny * voxel_a, voxel_a)
    struct.pack_into("<3i", header, 64, 1, 2, 3)
    header[208:212] = b"MAP "
    header[212:216] = b"\x44\x44\x00\x00"
    path.write_bytes(bytes(header) + image.astype("<f4").tobytes())
    return path


def write_velox(path: Path, image: np.ndarray, *, frames: int = 2) -> Path:
    import h5py

    meta = {
        "BinaryResult": {
            "PixelSize": {"width": "2e-11", "height": "2e-11"},
            "PixelUnitX": "m",
            "PixelUnitY": "m",
            "Detector": "BM-Ceta",
        },
        "Optics": {"AccelerationVoltage": "300000", "Defocus": "-1.6e-08"},
    }
    raw = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with h5py.File(path, "w") as f:
        group = f.create_group("Data/Image/0123abcd")
        group["Data"] = np.stack([image] * frames, axis=-1)
        block = np.zeros((raw.size + 16, frames), np.uint8)
        block[: raw.size, :] = raw[:, None]
        group["Metadata"] = block
    return path


def write_berkeley(path: Path, image: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["version_major"] = 0
        f.attrs["version_minor"] = 2
        group = f.create_group("data/image")
        group.attrs["emd_group_type"] = 1
        group["data"] = image
        for axis, n in enumerate(image.shape):
            dim = group.create_dataset(f"dim{axis + 1}", data=np.arange(n) * 0.02)
            dim.attrs["units"] = "nm"
            dim.attrs["name"] = f"axis{axis}"
        f.create_group("microscope").attrs["high tension"] = 300000.0
    return path


def seed_files(folder: Path, fixtures: Path | None = None) -> dict[str, list[Path]]:
    """Small valid files per reader family (written into ``folder``)."""
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = _image()
    grey8 = np.clip(image, 0, 255).astype(np.uint8)
    seeds: dict[str, list[Path]] = {k: [] for k in ("tiff", "pillow", "emd", "mrc", "dm", "ser")}
    tifffile.imwrite(
        folder / "s.tif", image, imagej=True, resolution=(50.0, 50.0), metadata={"unit": "nm"}
    )
    tifffile.imwrite(
        folder / "stack.tif",
        np.stack([image] * 3),
        imagej=True,
        resolution=(50.0, 50.0),
        metadata={"unit": "nm", "axes": "ZYX"},
    )
    seeds["tiff"] += [folder / "s.tif", folder / "stack.tif"]
    for suffix in (".png", ".jpg", ".bmp", ".gif"):
        Image.fromarray(grey8).save(folder / f"s{suffix}")
        seeds["pillow"].append(folder / f"s{suffix}")
    seeds["emd"] += [write_berkeley(folder / "b.emd", image), write_velox(folder / "v.emd", image)]
    seeds["mrc"].append(write_mrc(folder / "s.mrc", image))
    seeds["dm"] += [write_dm(folder / "s.dm3", image), write_dm(folder / "s.dm4", image, version=4)]
    if fixtures is not None and fixtures.is_dir():
        for name, family in (
            ("test-1.dm3", "dm"),
            ("test-1.dm4", "dm"),
            ("test_loading_image_saved_with_DM.tif", "tiff"),
            ("fei_example_tem_stack.emd", "emd"),
            ("temp.mrc", "mrc"),
            ("128x128-TEM_search_1.ser", "ser"),
        ):
            if (fixtures / name).is_file():
                seeds[family].append(fixtures / name)
    return {k: v for k, v in seeds.items() if v}


# ------------------------------------------------------------------------------------------
# Mutations
# ------------------------------------------------------------------------------------------


def _word(data: bytearray, rng: np.random.Generator, span: int) -> None:
    size = int(rng.choice([1, 2, 4, 8]))
    if len(data) < size + 1:
        return
    pos = int(rng.integers(0, max(1, min(span, len(data) - size))))
    value = int(rng.choice(INTERESTING)) if rng.random() < 0.8 else int(rng.integers(0, 2**31))
    order = "<" if rng.random() < 0.5 else ">"
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    struct.pack_into(order + fmt, data, pos, value & ((1 << (8 * size)) - 1))


def mutate_bytes(payload: bytes, rng: np.random.Generator, *, header_bytes: int = 1024) -> bytes:
    """1-4 structure-aware byte mutations, biased to the header where the numbers are."""
    data = bytearray(payload)
    for _ in range(int(rng.integers(1, 5))):
        op = rng.integers(0, 6)
        if op <= 1:
            _word(data, rng, header_bytes if rng.random() < 0.8 else len(data))
        elif op == 2 and data:
            pos = int(rng.integers(0, len(data)))
            data[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == 3 and len(data) > 16:
            del data[int(rng.integers(8, len(data))) :]
        elif op == 4 and len(data) > 64:
            start = int(rng.integers(0, len(data) - 32))
            block = data[start : start + int(rng.integers(1, 32))]
            pos = int(rng.integers(0, len(data)))
            data[pos:pos] = block * int(rng.integers(1, 8))
        elif len(data) > 64:
            start = int(rng.integers(0, len(data) - 32))
            del data[start : start + int(rng.integers(1, 32))]
    return bytes(data)


def mutate_hdf5(path: Path, out: Path, rng: np.random.Generator) -> Path:
    """Rewrite an HDF5 file's structure through h5py (shapes, chunks, attributes, links)."""
    import h5py

    shutil.copy(path, out)
    with h5py.File(out, "r+") as f:
        datasets: list[str] = []
        f.visit(lambda n: datasets.append(n) if isinstance(f[n], h5py.Dataset) else None)
        if not datasets:
            return out
        target = datasets[int(rng.integers(0, len(datasets)))]
        op = int(rng.integers(0, 6))
        parent = f[target].parent
        leaf = target.rsplit("/", 1)[-1]
        if op == 0:  # a huge declared shape, chunked, never written
            shape = tuple(int(rng.choice([1, 3, 8193, 10**5, 10**6])) for _ in f[target].shape)
            del f[target]
            parent.create_dataset(leaf, shape=shape or (1,), dtype="f4", chunks=True)
        elif op == 1:  # another dtype
            data = f[target][()]
            del f[target]
            kind = str(rng.choice(["c8", "f8", "i1", "u8", "S4"]))
            parent[leaf] = np.zeros(np.shape(data), kind)
        elif op == 2:  # attributes: wrong type, empty, huge
            obj = f[target]
            obj.attrs["units"] = str(rng.choice(["1/nm", "eV", "", "nm" * 1000, "\x00"]))
            parent.attrs["emd_group_type"] = int(rng.choice([0, 1, 2, -1]))
        elif op == 3:  # a soft link in a loop, or a dangling one
            parent[f"link{int(rng.integers(0, 99))}"] = h5py.SoftLink(
                str(rng.choice(["/", target, "/nope"]))
            )
        elif op == 4:  # a hard link cycle
            parent[f"loop{int(rng.integers(0, 99))}"] = f["/"]
        else:  # an external link
            parent[leaf + "_x"] = h5py.ExternalLink("/etc/passwd", "/")
    return out


def mutants(seed_path: Path, family: str, rng: np.random.Generator, out_dir: Path, index: int):
    """One mutated input for ``seed_path``: (path of the mutant, the frame to ask for)."""
    suffix = seed_path.suffix
    name = f"m{index:05d}_{seed_path.stem[:20]}{suffix}"
    out = out_dir / name
    if family == "emd" and rng.random() < 0.5:
        try:
            mutate_hdf5(seed_path, out, rng)
        except Exception:
            out.write_bytes(mutate_bytes(seed_path.read_bytes(), rng))
    else:
        header = 4096 if family in ("dm", "emd") else 1024
        out.write_bytes(mutate_bytes(seed_path.read_bytes(), rng, header_bytes=header))
    if family == "ser":
        emi = seed_path.parent / (seed_path.stem[:-2] + ".emi")
        if emi.is_file():
            target = out.parent / (out.stem[:-2] + ".emi") if out.stem.endswith("_1") else None
            if target is not None:
                payload = emi.read_bytes()
                target.write_bytes(payload if rng.random() < 0.5 else mutate_bytes(payload, rng))
    frame = [None, None, "sum", 0, 1][int(rng.integers(0, 5))]
    return out, frame


def check_one(path: Path, frame, *, budget_s: float, isolate: bool) -> dict:
    """Read one input; report its outcome and whether it broke a rule."""
    from hrtem_core.errors import HRTEMError
    from hrtem_core.io import load_image, load_image_isolated

    t0 = time.monotonic()
    kwargs = {
        "pixel_size_nm": 0.02 if path.suffix in (".png", ".jpg", ".bmp", ".gif") else None,
        "frame": frame,
    }
    try:
        if isolate:
            m = load_image_isolated(path, timeout_s=budget_s * 2, budget_s=budget_s, **kwargs)
        else:
            m = load_image(path, budget_s=budget_s, **kwargs)
        ok = m.data.ndim == 2 and m.data.dtype == np.float32 and bool(np.isfinite(m.data).all())
        report = {
            "outcome": "image",
            "shape": list(m.shape),
            "finding": None if ok else "bad image",
        }
    except HRTEMError as exc:
        message = str(exc)
        bad = "\n" in message or not message.strip()
        report = {
            "outcome": type(exc).__name__,
            "message": message,
            "finding": "multi-line message" if bad else None,
        }
    except Exception as exc:  # a finding: no library exception may escape
        report = {
            "outcome": "crash",
            "message": f"{type(exc).__name__}: {exc}"[:300],
            "finding": "exception escaped",
        }
    report["seconds"] = time.monotonic() - t0
    if report["seconds"] > budget_s * 1.5 + 2.0 and report["finding"] is None:
        report["finding"] = "over budget"
    return report


def run(
    *,
    seconds: float,
    iterations: int | None,
    seed: int,
    out: Path,
    formats: list[str] | None,
    budget_s: float,
    isolate: bool,
    fixtures: Path | None,
    log: Callable[[str], None] = print,
) -> dict:
    """Fuzz until ``seconds`` pass or ``iterations`` inputs were read; return a summary."""
    rng = np.random.default_rng(seed)
    work = out / "work"
    seeds = seed_files(out / "seeds", fixtures)
    if formats:
        seeds = {k: v for k, v in seeds.items() if k in formats}
    work.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    findings: list[dict] = []
    t_end = time.monotonic() + seconds
    n = 0
    families = sorted(seeds)
    while time.monotonic() < t_end and (iterations is None or n < iterations):
        family = families[n % len(families)]
        seed_path = seeds[family][int(rng.integers(0, len(seeds[family])))]
        path, frame = mutants(seed_path, family, rng, work, n)
        report = check_one(path, frame, budget_s=budget_s, isolate=isolate)
        counts[report["outcome"]] = counts.get(report["outcome"], 0) + 1
        if report["finding"]:
            kept = out / "findings" / path.name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, kept)
            findings.append({"file": str(kept), "frame": frame, **report})
            log(f"FINDING {kept.name}: {report['finding']}: {report.get('message', '')}")
        path.unlink(missing_ok=True)
        n += 1
    summary = {"inputs": n, "outcomes": counts, "findings": findings, "seed": seed}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to run (s)")
    parser.add_argument("--iterations", type=int, default=None, help="stop after N inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    parser.add_argument(
        "--format",
        action="append",
        dest="formats",
        choices=["tiff", "pillow", "emd", "mrc", "dm", "ser"],
    )
    parser.add_argument("--budget", type=float, default=10.0, help="read budget per input (s)")
    parser.add_argument("--isolate", action="store_true", help="each read in a child process")
    parser.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures")
    args = parser.parse_args(argv)
    summary = run(
        seconds=args.seconds,
        iterations=args.iterations,
        seed=args.seed,
        out=args.out,
        formats=args.formats,
        budget_s=args.budget,
        isolate=args.isolate,
        fixtures=args.fixtures,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "findings"}))
    print(f"{len(summary['findings'])} finding(s); details in {args.out / 'summary.json'}")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
