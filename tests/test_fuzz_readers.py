"""A seeded fuzz corpus for every reader: structure-aware mutations of small valid files (and of
the small real files in ../shared/fixtures when present) must each end within the read budget as
a valid image or a one-line HRTEMError. The mutation engine is scripts/fuzz_readers.py, which
also runs longer campaigns by hand."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from hrtem_core.errors import ReadError
from hrtem_core.io import load_image
from scripts import fuzz_readers
from tests.conftest import FIXTURES, REPO

N_INPUTS = 120  # 20 per family on average, about 15 s on one core
ADDRESS_SPACE = 3 * 1024**3


def test_every_seed_is_a_valid_image(tmp_path: Path) -> None:
    seeds = fuzz_readers.seed_files(tmp_path)  # the generated ones only
    assert sorted(seeds) == ["dm", "emd", "mrc", "pillow", "tiff"]
    for family, paths in seeds.items():
        for path in paths:
            pixel = 0.02 if family == "pillow" else None
            m = load_image(path, pixel_size_nm=pixel)
            assert m.shape == (32, 32), path.name
            assert m.pixel_size_nm == pytest.approx((0.02, 0.02), rel=1e-6), path.name
            if family != "pillow":  # lossy or 8-bit there
                np.testing.assert_allclose(m.data, fuzz_readers._image(), rtol=1e-6)


def test_mutations_are_seeded_and_change_the_file(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8
    a = fuzz_readers.mutate_bytes(payload, np.random.default_rng(3))
    b = fuzz_readers.mutate_bytes(payload, np.random.default_rng(3))
    assert a == b and a != payload


def test_seeded_corpus_ends_cleanly(tmp_path: Path) -> None:
    """The corpus runs in a child process under a 3 GB address-space limit."""
    fixtures = FIXTURES if FIXTURES.is_dir() else None
    child = f"""
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
from scripts import fuzz_readers
summary = fuzz_readers.run(seconds=600, iterations={N_INPUTS}, seed=20261206, out=Path(sys.argv[1]),
    formats=None, budget_s=10.0, isolate=False,
    fixtures=None if sys.argv[2] == "-" else Path(sys.argv[2]), log=lambda m: None)
print(json.dumps(summary))
"""
    result = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "fuzz"), str(fixtures or "-")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == N_INPUTS
    assert summary["findings"] == []
    outcomes = summary["outcomes"]
    assert "crash" not in outcomes
    # The corpus exercises both ends: some mutants still read, most are refused.
    assert outcomes.get("image", 0) > 0 and outcomes.get("ReadError", 0) > N_INPUTS // 3


#: A mutant of a Berkeley EMD found by ``scripts/fuzz_readers.py --seed 99``: reading the
#: ``units`` attribute of ``dim1`` loops for ever inside libhdf5 (h5py 3.16), holding h5py's
#: process-wide lock. zlib + base64 of its 14,339 bytes.
HDF5_HANG = (
    "eNrtmnlcz9n3xz+f+pRWyzDGzFiyjLGNZWyNLZ5XhLHNGGaMQWhIWojIWJK1kCJKtpA1EoW079q0ahOKFkSLEmXr96GP"
    "GTxm+z2+39/v+/h+v73+OZ/7vueec+99n3PP/ZzztjMYPkJb4xMNySuoqUlkksaSt1GrQM/+77bf9M9UUKmCblLQ40pv"
    "nste97VQPG+skK+jXNd2VTyf9I2+/ivu2vfwRs8y1Tfj6/Hn0PmPXJWB/rAJr+j3760yRuldvjmGiw1fUVPj2YvMLWeb"
    "Wxi9a5+6/0u9TRQW975daykkSSUN5b/VJFZGiyyNzc1mmBrON1/0yk7V5O70mmPoO/rf4A/HG5v96XilX/1N+o5fvZln"
    "nsKvJKp/z69s6jxfoase/21436/enK86qu/yGZsazjV6yw4N/kG9344bP1wqt+Y3duen/K6fvm/Hb+blqvMuX6iindfu"
    "v/P9SSXKvxtfYzTr2t//zfjas1UdbfG3Na9+a3Q9/lPjayeN34+vc4xNeynol/9IfK07B6S/ngOhDd7177uKtppG/Tv6"
    "O/eU9/frt3tGo9f3DCPTOTPmLjJfYjFjsfWru9Ef3TN+oyp1v6Vv2p3qqJL0HTv5I6osP1FecTbRaSP/J1DX85Ga5KPV"
    "in4VufZX/UpKdQLVFCeQsrSntuR3r/zL/qX7PHOolri0SV3MuigTSR6VdDidRU5sGHsfeNJ8ozNlTVfw7fK5dK0wZchD"
    "W7bMs2fZ+hO0mRbCtogcZNMfkS6RiaIBmqJQraEwz1ATLvkysbRdCRFjs5hQE0LS8sMYldljnGXFRakpJiZWPEm3oaJ6"
    "Jw9iVIXfUFUxWCYR56aWYViUTnZ4KGb3TzN1+T4qN6xj4NZNHLfaxI8zHSjvsof4iFPYH4jDLiwfJ+1qpugri9UmqmKl"
    "h0ws2SwT6g619I4qZPOxDHTWhOA89yS+Bo5Ez1rPmCk2PJywiu1azhRnuYH9I+yTynAfW875QwVs9bnKbK0ALHUvsCvv"
    "FON3HGFvoBvtcjzoMHEf0R+fICU4AGvdaAz0r1NSdIvUgLuovyyjY2Ip39cUE/npfdam5TJkQDr6Z4MZkupPkNUxuhcf"
    "xfOrPez/aA86AR6w5SzbxyYyUxrPpx9extkyCrsp8cTPj6fgeSSfx4dwcEk0p0cE4ekSwqxdUTz4OgBHy8v0mB9FlkYc"
    "U17E8WjBFa72TWbc/jgcS1M51zUJ956J7L5wBd9v4+gVGcOSXpGotQ/ig7QwVpuGsHVbELlbo2ht7sFdEw9anDyBWvOL"
    "LHALQ2V5MgsT0nncOZ8Z/e/TZVsJZrq5BPvdY3vrXM4rZ+Aln7Nh81C23j1P1s+ecpnu2Ew4yoR7R0jW9SHM4AIz2oXT"
    "cFEsqePTSdXJY9icPJ5NLaay8A7VPXPxzkulosqO6iH25NvuoJ+pB2Y9Q9lZdgVXWT4J35TSP15ZTN+mIjxcVMTDI7WI"
    "bVWM632Lq4ZXeNFXrjt5L/GpLpzxs2Vtg43kBG9mvVxW8+0nsRQBlOxIYuXhO0gOPSKpRlkY7pMJlS5KoqnkMVu+KCZo"
    "zHL0i63p7r4J9ZjDtBrsTfPBV1ja5A4xGyQiM19FSJ6qi7snGogxlxqIDi9fkvFzPo/1E2jy0ymi1FzxLtjC85fLGNbB"
    "lueJViTtdaBt6gFC1gZweFUaww2KkWi8ZH6/hsJppKa4YawqVEuVRUfjZ/h1saLV0Q30a+dEyL39FK/wpbRjPD/NLODr"
    "nCr5uhqIOKElFiK3by0loV74kPIbuZyrDaZhdy+ydx9k2Co7pqxYy5aFVox0sqPHREe29TlIXyIZ5JZCwMlCtPvWMkhb"
    "VfQz1xT6G1RFew0Vccu6Bk91J2YNdqHMeQ+j2p6n5JYfS3vFM2t1NisDi2n8y2NyM17SuaAa9TWPcF1bwAyNLK4Yp/No"
    "UhAWlkcxfu6CU74TtWd2MOSIC9t378M68zgelREYzE9h3v6bbG1ewsUNVXSfVM6Ugc9o4VrGqg4FjNjhy7yX/rg3vkB4"
    "x0ucdInm0sEEdneP50lhOl5X0zEpyibcNg3jB9k8S88kLzaZRnL7c9XxpcfAEDza+zNS9yL7D/nSaacfU8oCmeEQzAFp"
    "BPNmJNH1x3i8fspi9QdZLN6RjnW/TAyWpRLXJJ1jH+axvH8ONxakE7dUvqYuKUyeEcXVAaE0Sr1AYHNfrKZ707noHF9+"
    "68UMue+negXjbRSDWdMrPPslA6evMji/+Tae2Zno52ehqX2N+PbZHJ58hTzfCGanX8Qv7AIbhvig3MWPmMW+nM/0Ytzn"
    "4TRpVUubhk8ZvPgp4WZFFN9II2RRBEaxPqQmeWDTzJF2N12QtnNmvOlOJJ4HaP7ZGZ4WRWG4Mp2kB4UY2NSQWFCLvmYt"
    "I9bWIulXTVFqLk86JLNhfQQr/L35NugAzi9dCeu5mckam4l9LJd38AhbktXE6okNRPhAiZiiUsYtrQwqW4UT1M+TcJkT"
    "sTm2aAtLulispCJ/Pc+67GV3r2OYlEdxwjGXE3qVXLaRCSWJqtjr2lDkl8qESbySSLt0D5O718gwCOBpnyN4mTtiOn8D"
    "/RcuxvXT2VStWUe6zW6CumuIx5Ya4oG/TEgPPGS5yVVuNIymMMWTlhmOFFXaE7tuEX3XmtInei2rhuzm5eRj3BmYwA87"
    "ruGjX0N5lUw07a0u7nfTFioDVMSYLjJRuKeUDwyv0uxgCCp9j9P9h+2YJG/CTHMlTQzWMHHUOrRnu9LXQFlULJGIe27V"
    "OIwuxsExmxcpYWyyOY2D6h6C4h3o+cyRFYu3kFu1i69n7+FWyQkaaIVx8+wNLkyTxyy7p2z0eYlBjlTsCHpJefNH8DQH"
    "/4QkUq2CydU7R5vsvQQe3YXFT/ZcNdtCQvx6PCM9mHi/EFPu4ZGVwwfTMlnrE8/jw6Gs3XOJJ1Y+bAv3RdfhFCv3nWDT"
    "dm/WBV/ASS2A3uPiaTohhj0jM+k46hYx+jf4qEMhc/KL2Ol3E0+1JL4bGsfjghimzw1EkuaD62pvSoafodWQkzx3OkP/"
    "9Rfp2MOfDUsD6aMZSXlGEGVPEjh7MJmVL6J4aJ1EtV8a+fJ4MN1KHl/apHDKMZXGIo6AjCRO5kRhkBLKla8j6TQphIbX"
    "glhzKwDlX6KRLokiQRbFulkR6F5PxDkvnsKgeOytU5loepVthRmsGpVM58Z7aLtrJ46NDnHO2oujrUPRlPtVe3LpPfQO"
    "g8QjPCbXsHJkBdozK8j5sgiHPqmUqSXStsCPZ07HGfnlAWaNd8OodB+Gp9wIcD6Ctd15jLqE0dIgje/GXWdgw1I+O1pJ"
    "/rDnHAiuIGV0CQO9i9lwdAXOZ9aQqrqNhzn7mN09kIbPYmkSUEhc4DPu95aJdGtVYaihKu7Okong9ZUEOxTy+aAodnxy"
    "lrDAffJ93EjZ/nU0HLZK/i5tuF1tz0753WXmQX/Mnl5hXqcCbkuecydcXbTIVhPVd9WEqVRZ2FY+ocd5IybFLaHrVHsc"
    "0vby41JfZDUJSLvcpUL6nBp3JTH8Y3Vh+amW8HVXF+XnpKLt3UL0dJNIkJxnRcoupG1sKNJeSk+HWej+Ys2S0Q6oHXZD"
    "Y8QlejllUT6oFHUlJZH5uYY43qORGNtAU4wtaSDs46ux97al8VU7UlIdsbI4yPjL5zEZEsUXPxZQOf4hww5JxSodNXH7"
    "jrIYWFzL00k1jFfNZ05NIl52PuiWH+baCrm+rHXUTNlI3x838p2VK+XdvJkY5otmeCKLLO6zqnM1L4tkQmOusnDTUxEu"
    "frVoZTyU++JhYroe4LvEI6RpXGLEV6F0bJKA37FM5vjms6xvIRtP3mOyYwWl6+9hP7yAY8fSuDMkiWe7gtkX50P+555E"
    "GbgTau9GlIk7czPPMn6kPx02htByUgId5X46q/I22ksL+aqigo+zSnl+7QYn298kvCSGRcShnh9DzZEoYvdfpvdnsWRd"
    "jsZpeDQbzybw8HoE3YZFs9UphPOlsbjJY5PtF3HMi4pHVh2L9/FYpg6K44rBZe40u4JRbjQe34bTaGk8ZT8kIa2NoNXk"
    "y2woi0RVJ5remZeZHBhOpWc0pQl3MRLFDPG4xfJjWfTrH0eHL2Ll87zE5ANH+GrAYRZpHCB25AEuhLlzKvgs9z+V2/0n"
    "MbRsms6XtfkYjsqjW7NH3PWu5Nln8rV5leKufR2zFamcNQlhi68/Nq6n2PTkECpPTvBk8EHyXI6RYH6GzkNkYpH8/KyW"
    "SMTighK+sEjktlMUi9ec5KKNM+Pkd+7uJhtZ7rCGaGsXXqi5oN/8OAO+DqVHeh7+20uxcHnBB6NkInCdTKg9kAqzSdUk"
    "Gz9gqHw96lWXmJV6gsq2bsi6bMAywhbVcbZo9rInunA/DhYaotdTDeE7Tllsu/yIiD3ZnEgJYoDJUcZlOhI/YwU505bQ"
    "c6g1qdvWsuy0G2dKj9HcPJomSjf4yfAJlneUhMVWLRHQT0tEGmmKhfKYmhFQgvmYNJTx59P57mg5bKXy51VIz1ow1sGC"
    "HVHrsTFxY/QqVTForKoInikR2S0eyueaxfPnoQxKk9tj+U7GhK7FoZctM7+R+/UUO6KfOVPzgzc28jv4A/U8Zn72DHdb"
    "qRiNuugmVRMtLVXFmhYS4dm1hIKOWVzSDeSk11FGymN3YdYW2p1eRstdi3HsaEeQ3x4+H1NNxJQq5rWrYM3+QrxqUylw"
    "DOOnpHM8OXeExVF7cXTZTh9zF0a33sfedseRzDjP0LUxLJiRxo6yWyTWlhMQ9ojxP1djmvwYd6cSak/lEdE0mVVXIlga"
    "eo4kk8PMUtuLU8AOPqnYyelNrkhkx3k6Mos5LZP5KiSN9YVXmBMlt81xCSRFRxFtfokKc7kd5/oRviVQHkfDsDkagr1p"
    "DPab4/CIj2S1dQIntFPR7JPMnEapPJ6SLr8jpjAhPJbRgXHsrIrg4xbBTLcL4LvuIdi9DOTCz0E4DvIn2C6Uj5Ycw93q"
    "BPNVz6Km48MCua9MP3mV4KPpfLgwE+8ueUzOv8Hjabdpu/s2kcXXGWWYyLZVcQzfHkk3m2DCG3jhP/IEytc9CXp0EN1l"
    "3njH+aGSF0pAfBRPW16lxDabTUUFPN6dRyuL22wpuImvfw67NNbwRd+tnB2xh9kXj7Da1YfgNklMPXyb1kXl5M2roa2b"
    "REj6SMXDD2uYo3kXO+McCjfGYRHgy+nJHuwP2cWMgU7cbOXMU8ftWDo6k9v+AI/HBnJNJ4Usw1ya6VYxZ9xzbjZWFk2u"
    "ScSBnc/Za1SEU7k5ffOWExqzjs2DjjB7gQ+22unydRayoOMLjnRTF8emaooPEzVErJGqGOJTxZh5+awOldvfznN8b+DK"
    "tKqNbGhszcKploy1X8WlmfL4k7WXRpEXKDiVyYe7S3joIhUrTTTEoX1qIkqmKTZ4K4mu8Y+py1cp/5qv0tH683zBm+TF"
    "stZ/zvcm77qpzX9L3lr1vbxS3Q5IpdK/yCPp/Zqv6qMp6VOr/Jd5pM/eS2kp8mJDf51HMzn3EjPjxZby9sdy/Y0V7036"
    "VmXs7fpbz46/CfxNjsprOWaGpq8rjn8lR+UtOUr/v/vR7/9qP5T/Sfsh+5O6xvft3/3uoK6uIfnDukY96usab9c1fq1z"
    "t3//PKrDhH9yPv79+uRv/qH92j/mGc+dp7PYyOxV8V/yJ/78trPajP9gWP2b/dfil2ZeI28td9arox56fq3X35/o56Vo"
    "++q57X6FS4rnwXoPJr76Faboj9TTyDxsMVjjsoIvVq/ztG3hVZ0SFPyJeh7y3szDyYpxKXq9XyNNMf6qXkRVJ/mIdIWc"
    "TL1vXg/MUsjL1ru1/BXjNYXc63oLX4mzuKGQf1NPYZUKPXl6BnUDFPpu6b0aNW3bbYXefL06Nfl6I8X4r6VvXWze/y7F"
    "zPTdtoqCGi4ztuypiBG/xy/7Hf7XBUaJY6N6a6tHPepRj3rUox71qEc96lGPetTjPyLz8Rdfrv37dv8bpHT+B86xwuQ="
)


def test_found_hdf5_hang_ends_at_its_budget_and_blocks_no_one(tmp_path: Path) -> None:
    hang = tmp_path / "hang.emd"
    hang.write_bytes(zlib.decompress(base64.b64decode("".join(HDF5_HANG))))
    good = fuzz_readers.write_berkeley(tmp_path / "good.emd", fuzz_readers._image())
    load_image(good)  # start the reader process server first
    outcome: list[str] = []

    def read_hang() -> None:
        try:
            load_image(hang, budget_s=1.0)
        except ReadError as exc:
            outcome.append(str(exc))

    t0 = time.monotonic()
    thread = threading.Thread(target=read_hang)
    thread.start()
    time.sleep(0.5)
    m = load_image(good)  # another HDF5 read is served meanwhile
    assert m.shape == (32, 32) and thread.is_alive()
    thread.join(30)
    assert outcome == [
        "hang.emd: reading took longer than 6 s: refused (a damaged or hostile file?)"
    ]
    assert time.monotonic() - t0 < 15
