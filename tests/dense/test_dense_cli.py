"""`quarry score/select --reduce` on dense outputs as files: arrays, NIfTI-1/2 and nnU-Net .npz.

The NIfTI files are written here from the format's definition (header fields at their offsets,
both byte orders, gzip), and every result is compared with a double-precision NumPy reference.
Corrupt files must give an error naming the file, exit 1, and no output.
"""
import gzip
import os
import struct
import subprocess

import numpy as np
import pytest

QUARRY = os.environ.get("QUARRY", "quarry")


def run(*args, code=0):
    r = subprocess.run([QUARRY, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == code, f"quarry {' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def softmax_volume(rng, c, shape):
    z = rng.normal(size=(c, *shape)) * 2.0
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


def entropy(p):  # p: [C, ...] in double
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(0)


NIFTI_DTYPES = {np.dtype(np.uint8): 2, np.dtype(np.int16): 4, np.dtype(np.int32): 8, np.dtype(np.float32): 16,
                np.dtype(np.float64): 64}


def nifti_bytes(data_xyzc, version=1, big_endian=False, slope=0.0, inter=0.0):
    """A single-file NIfTI image of `data` given in NIfTI axis order (x, y, z, t, ...)."""
    e = ">" if big_endian else "<"
    arr = np.asarray(data_xyzc)
    dims = list(arr.shape)
    code = NIFTI_DTYPES[arr.dtype]
    payload = arr.astype(arr.dtype.newbyteorder(e)).tobytes(order="F")  # x fastest
    if version == 1:
        h = bytearray(352)
        struct.pack_into(e + "i", h, 0, 348)
        struct.pack_into(e + "8h", h, 40, len(dims), *(dims + [1] * (7 - len(dims))))
        struct.pack_into(e + "hh", h, 70, code, arr.dtype.itemsize * 8)
        struct.pack_into(e + "fff", h, 108, 352.0, slope, inter)
        h[344:348] = b"n+1\0"
    else:
        h = bytearray(544)
        struct.pack_into(e + "i", h, 0, 540)
        h[4:12] = b"n+2\0\r\n\x1a\n"
        struct.pack_into(e + "hh", h, 12, code, arr.dtype.itemsize * 8)
        struct.pack_into(e + "8q", h, 16, len(dims), *(dims + [1] * (7 - len(dims))))
        struct.pack_into(e + "q", h, 168, 544)
        struct.pack_into(e + "dd", h, 176, slope, inter)
    return bytes(h) + payload


def write_nifti(path, data_xyzc, **kw):
    b = nifti_bytes(data_xyzc, **kw)
    if str(path).endswith(".gz"):
        b = gzip.compress(b)
    path.write_bytes(b)


def read_csv_scores(path, col="score"):
    lines = path.read_text().strip().splitlines()
    head = lines[0].split(",")
    return [dict(zip(head, line.split(","))) for line in lines[1:]]


@pytest.fixture
def rng():
    return np.random.default_rng(17)


def test_array_every_reduction_against_numpy(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 3, (5, 6, 7)) for _ in range(4)])  # [N, C, D, H, W]
    np.save(tmp_path / "p.npy", p.astype(np.float32))
    h = entropy(np.moveaxis(p, 1, 0)).reshape(4, -1)  # [N, V]
    pred = p.argmax(1).reshape(4, -1)
    for reduce, ref in [("mean", h.mean(1)), ("max", h.max(1)), ("sum", h.sum(1)),
                        ("topq:0.1", np.array([np.sort(r)[::-1][:int(np.ceil(0.1 * r.size))].mean() for r in h])),
                        ("foreground-mean", np.array([r[m != 0].mean() for r, m in zip(h, pred)]))]:
        run("score", "--input", tmp_path / "p.npy", "--reduce", reduce, "-o", tmp_path / "s.npy")
        got = np.load(tmp_path / "s.npy")
        assert got.shape == (4,)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=reduce)


def test_slices_mask_weights_voxel_map_and_select(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 2, (4, 5, 6)) for _ in range(3)])
    np.save(tmp_path / "p.npy", p.astype(np.float32))
    mask = (rng.random((3, 4, 5, 6)) < 0.3).astype(np.uint8)
    np.save(tmp_path / "m.npy", mask)
    h = entropy(np.moveaxis(p, 1, 0))  # [N, 4, 5, 6]
    w = np.array([0.5, 2.0])[p.argmax(1)]
    hw = np.where(mask == 0, h * w, np.nan)
    run("score", "--input", tmp_path / "p.npy", "--slices", 1, "--reduce", "max", "--ignore-mask", tmp_path / "m.npy",
        "--class-weights", "0.5,2", "--voxel-map", tmp_path / "map.npy", "-o", tmp_path / "s.npy")
    got = np.load(tmp_path / "s.npy")
    ref = np.nanmax(hw, axis=(1, 3))  # per slice along axis 1 of the grid (size 5)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "map.npy"), np.where(mask == 0, h * w, 0.0), rtol=1e-4, atol=1e-5)
    # The top 4 slices, at most 2 from one case, case 0 excluded.
    (tmp_path / "ex.txt").write_text("0\n")
    r = run("select", "--input", tmp_path / "p.npy", "--slices", 1, "--reduce", "max", "--ignore-mask",
            tmp_path / "m.npy", "--class-weights", "0.5,2", "-k", 4, "--per-case", 2, "--exclude", tmp_path / "ex.txt")
    rows = [line.split(",") for line in r.stdout.strip().splitlines()[1:]]
    assert len(rows) == 4
    order = sorted(((-ref[n, s], n, s) for n in (1, 2) for s in range(5)))
    want, taken = [], {}
    for _, n, s in order:
        if taken.get(n, 0) < 2:
            want.append((n, s))
            taken[n] = taken.get(n, 0) + 1
    assert [(int(x[1]), int(x[3])) for x in rows] == want[:4]


@pytest.mark.parametrize("version,big,gz", [(1, False, False), (1, True, True), (2, False, True), (2, True, False)])
def test_nifti_case_files(tmp_path, rng, version, big, gz):
    shapes = [(6, 5, 4), (7, 5, 3), (4, 4, 4)]  # cases of different sizes (x, y, z)
    refs = []
    for i, xyz in enumerate(shapes):
        p = softmax_volume(rng, 3, xyz)  # [C, x, y, z]
        refs.append(entropy(p).mean())
        write_nifti(tmp_path / f"case_{i:03d}.nii{'.gz' if gz else ''}", np.moveaxis(p, 0, -1).astype(np.float32),
                    version=version, big_endian=big)
    spec = str(tmp_path / ("case_*.nii" + (".gz" if gz else "")))
    run("score", "--input", spec, "--reduce", "mean", "-o", tmp_path / "s.csv")
    rows = read_csv_scores(tmp_path / "s.csv")
    assert [r["case"].endswith(f"case_{i:03d}.nii" + (".gz" if gz else "")) for i, r in enumerate(rows)] == [True] * 3
    np.testing.assert_allclose([float(r["score"]) for r in rows], refs, rtol=1e-4)
    r = run("select", "--input", spec, "--reduce", "mean", "-k", 1)
    assert r.stdout.splitlines()[1].split(",")[1] == str(int(np.argmax(refs)))


def test_nifti_vector_image_and_scaling(tmp_path, rng):
    p = softmax_volume(rng, 2, (5, 4, 3))
    # MONAI's vector image: classes along the 5th dimension, the 4th being 1.
    write_nifti(tmp_path / "v.nii", np.moveaxis(p, 0, -1)[:, :, :, None, :].astype(np.float32))
    # Stored as int16 with scl_slope 1/1000: read as float32 probabilities.
    q = np.round(p * 1000).astype(np.int16)
    q[1] = 1000 - q[0]
    write_nifti(tmp_path / "q.nii", np.moveaxis(q, 0, -1), slope=0.001)
    run("score", "--input", f"{tmp_path / 'v.nii'},{tmp_path / 'q.nii'}", "--reduce", "mean", "-o", tmp_path / "s.npy")
    got = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(got, [entropy(p).mean(), entropy(q / 1000.0).mean()], rtol=1e-4)


def test_nnunet_npz_and_nifti_masks(tmp_path, rng):
    refs = []
    for i in range(2):
        p = softmax_volume(rng, 3, (4, 5, 6)).astype(np.float16)  # nnU-Net: [C, z, y, x]
        np.savez_compressed(tmp_path / f"c{i}.npz", probabilities=p)
        mask_zyx = (rng.random((4, 5, 6)) < 0.5).astype(np.uint8)
        write_nifti(tmp_path / f"m{i}.nii.gz", np.transpose(mask_zyx))  # NIfTI (x, y, z)
        h = entropy(p.astype(np.float64) / p.astype(np.float64).sum(0))
        refs.append(np.sort(h[mask_zyx == 0])[::-1][:int(np.ceil(0.25 * (mask_zyx == 0).sum()))].mean())
    run("score", "--input", tmp_path / "c*.npz", "--ignore-mask", tmp_path / "m*.nii.gz", "--reduce", "topq:0.25",
        "-o", tmp_path / "s.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), refs, rtol=1e-3)


def test_corrupt_and_wrong_files_are_named(tmp_path, rng):
    p = softmax_volume(rng, 2, (4, 4, 4))
    good = nifti_bytes(np.moveaxis(p, 0, -1).astype(np.float32))
    cases = {
        "truncated.nii": good[:-10],
        "badmagic.nii": good[:344] + b"xx1\0" + good[348:],
        "pair.nii": good[:344] + b"ni1\0" + good[348:],
        "badsize.nii": b"\x01\x02\x03\x04" + good[4:],
        "short.nii": good[:100],
        "three_d.nii": nifti_bytes(p[0].astype(np.float32)),
        "badtype.nii": good[:70] + struct.pack("<h", 32) + good[72:],
        "truncated.nii.gz": gzip.compress(good)[:-30],
        "nan.nii": nifti_bytes(np.moveaxis(np.where(np.arange(2)[:, None, None, None] == 0, np.nan, p), 0, -1).astype(np.float32)),
    }
    expect = {"truncated.nii": "truncated", "badmagic.nii": "bad NIfTI-1 magic", "pair.nii": ".hdr/.img pair",
              "badsize.nii": "not a NIfTI-1 or NIfTI-2 file", "short.nii": "truncated NIfTI-1 header",
              "three_d.nii": "4th dimension", "badtype.nii": "datatype 32", "truncated.nii.gz": "truncated",
              "nan.nii": "case 0, voxel [0, 0, 0]: probabilities contain NaN"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        out = tmp_path / f"{name}.npy"
        r = run("score", "--input", tmp_path / name, "--reduce", "mean", "-o", out, code=1)
        assert name in r.stderr and expect[name] in r.stderr, (name, r.stderr)
        assert not out.exists()


def test_usage_errors_exit_2(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 2, (3, 3))])
    np.save(tmp_path / "p.npy", p.astype(np.float32))
    for args in (["--reduce", "median"], ["--reduce", "topq:2"], ["--reduce", "mean", "-a", "egl"],
                 ["--slices", "5"], ["--reduce", "mean", "--class-weights", "1,x"],
                 ["--reduce", "mean", "--background", "7"], ["--class-weights", "1,2"],
                 ["--reduce", "mean", "--patches", "2x2x2"], ["--slices", "0", "--patches", "2"]):
        out = tmp_path / "o.npy"
        r = run("score", "--input", tmp_path / "p.npy", *args, "-o", out, code=2)
        assert "error" in r.stderr, args
        assert not out.exists()
    # Without a CUDA build, --device cuda fails as it does for a pool of rows.
    np.save(tmp_path / "rows.npy", p[0, :, 0, :].T.copy().astype(np.float32))
    rows = subprocess.run([QUARRY, "score", "--input", tmp_path / "rows.npy", "--device", "cuda", "-o", tmp_path / "r.npy"],
                          capture_output=True, text=True)
    if rows.returncode != 0:
        r = run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--device", "cuda", "-o", tmp_path / "o.npy",
                code=rows.returncode)
        assert "cuda" in r.stderr and not (tmp_path / "o.npy").exists()
    # The output may not replace the input.
    run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "-o", tmp_path / "p.npy", code=2)
    assert np.load(tmp_path / "p.npy").shape == (1, 2, 3, 3)


def test_info_shows_dense_layouts(tmp_path, rng):
    write_nifti(tmp_path / "c.nii.gz", rng.random((6, 5, 4, 3)).astype(np.float32))  # x, y, z, classes
    np.save(tmp_path / "p.npy", np.zeros((2, 3, 4, 5), np.float32))
    r = run("info", tmp_path / "c.nii.gz", tmp_path / "p.npy")
    assert "shape [3, 4, 5, 6]" in r.stdout
    assert "as a dense case (--reduce): 3 classes over a grid [4, 5, 6] (z, y, x)" in r.stdout
    assert "as dense outputs (--reduce): 2 cases x 3 classes over a grid [4, 5]" in r.stdout


def mean_entropy(p):  # p: [N, C, spatial...] -> [N]
    return np.array([entropy(c.astype(np.float64)).mean() for c in p])


def test_npz_members_as_input_and_mask(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 3, (4, 5)) for _ in range(3)]).astype(np.float32)
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[:, :2] = True
    np.savez(tmp_path / "a.npz", probs=p, mask=mask, other=np.zeros(2))
    run("score", "--input", f"{tmp_path}/a.npz:probs", "--reduce", "mean",
        "--ignore-mask", f"{tmp_path}/a.npz:mask", "-o", tmp_path / "s.npy")
    want = [entropy(c.astype(np.float64))[2:].mean() for c in p]
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int64, np.float16])
def test_masks_of_every_dtype(tmp_path, rng, dtype):
    p = np.stack([softmax_volume(rng, 2, (6, 7)) for _ in range(2)]).astype(np.float32)
    mask = np.zeros((2, 6, 7), dtype=dtype)
    mask[:, 3:] = 1
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "m.npy", mask)
    run("score", "--input", tmp_path / "p.npy", "--reduce", "max", "--ignore-mask", tmp_path / "m.npy",
        "-o", tmp_path / "s.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), [entropy(c.astype(np.float64))[:3].max() for c in p],
                               rtol=1e-5)


def test_a_mask_of_another_grid_is_an_error(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 2, (6, 10)) for _ in range(3)]).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", np.zeros((3, 10, 6), np.uint8))  # transposed: same voxel count
    r = run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--ignore-mask", tmp_path / "t.npy",
            "-o", tmp_path / "s.npy", code=1)
    assert "t.npy" in r.stderr and "[3, 6, 10]" in r.stderr and "[3, 10, 6]" in r.stderr
    assert not (tmp_path / "s.npy").exists()
    np.save(tmp_path / "c.npy", np.zeros((3, 1, 6, 10), np.uint8))  # [N, 1, H, W] is the same grid
    run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--ignore-mask", tmp_path / "c.npy",
        "-o", tmp_path / "s.npy")


def test_one_array_with_a_mask_file_per_case(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 2, (3, 4, 5)) for _ in range(3)]).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    masks = []
    for n in range(3):
        m = (rng.random((3, 4, 5)) < 0.5).astype(np.uint8)
        masks.append(m)
        write_nifti(tmp_path / f"m{n}.nii", m.transpose(2, 1, 0))  # (x, y, z)
    run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--ignore-mask", f"{tmp_path}/m*.nii",
        "-o", tmp_path / "s.npy")
    want = [entropy(p[n].astype(np.float64))[masks[n] == 0].mean() for n in range(3)]
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, rtol=1e-5)


def test_a_case_file_named_twice_is_refused(tmp_path, rng):
    write_nifti(tmp_path / "a.nii", softmax_volume(rng, 2, (3, 4, 5)).transpose(3, 2, 1, 0).astype(np.float32))
    os.symlink(tmp_path / "a.nii", tmp_path / "b.nii")
    for spec in (f"{tmp_path}/a.nii,{tmp_path}/a.nii", f"{tmp_path}/*.nii"):
        r = run("score", "--input", spec, "--reduce", "mean", "-o", tmp_path / "s.csv", code=2)
        assert "is the same file as" in r.stderr
    assert not (tmp_path / "s.csv").exists()


def test_voxel_map_failures_write_nothing(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 2, (4, 5)) for _ in range(2)]).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    r = run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--voxel-map", tmp_path / "map.csv",
            "-o", tmp_path / "s.npy", code=2)
    assert ".npy" in r.stderr
    run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--voxel-map", tmp_path / "no" / "map.npy",
        "-o", tmp_path / "s.npy", code=1)
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "map.csv").exists()
    if os.path.exists("/dev/full"):  # a device is written in place: the write fails
        os.symlink("/dev/full", tmp_path / "full.npy")
        run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--voxel-map", tmp_path / "full.npy",
            "-o", tmp_path / "s.npy", code=1)
        assert not (tmp_path / "s.npy").exists()


def test_no_cases(tmp_path):
    np.save(tmp_path / "p.npy", np.zeros((0, 3, 4, 5), np.float32))
    run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--voxel-map", tmp_path / "map.npy",
        "-o", tmp_path / "s.npy")
    assert np.load(tmp_path / "s.npy").shape == (0,)
    assert np.load(tmp_path / "map.npy").shape == (0, 4, 5)
    run("score", "--input", tmp_path / "p.npy", "--reduce", "foreground-mean", "--background", "3",
        "-o", tmp_path / "t.npy", code=2)
    run("score", "--input", tmp_path / "p.npy", "--reduce", "mean", "--class-weights", "1,2",
        "-o", tmp_path / "t.npy", code=2)
    assert not (tmp_path / "t.npy").exists()


def test_case_names_that_are_not_utf8(tmp_path, rng):
    name = os.fsencode(str(tmp_path)) + b"/case-\xff.nii"
    with open(name, "wb") as f:
        f.write(nifti_bytes(softmax_volume(rng, 2, (3, 4, 5)).transpose(3, 2, 1, 0).astype(np.float32)))
    r = subprocess.run([QUARRY, "select", "--input", name, "--reduce", "mean", "-k", "1", "--format", "json"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import json
    j = json.loads(r.stdout.decode("utf-8"))
    assert j["selected"][0]["index"] == 0 and "\ufffd" in j["selected"][0]["case"]


def test_float64_beyond_float32_and_tiny_q_are_named(tmp_path, rng):
    z = rng.normal(size=(2, 3, 4, 5))
    z[1, 2, 3, 4] = 1e300
    np.save(tmp_path / "z.npy", z)
    r = run("score", "--input", tmp_path / "z.npy", "--logits", "--reduce", "mean", "-o", tmp_path / "s.npy", code=1)
    assert "case 1, voxel [3, 4]" in r.stderr and "class 2 is 1e+300" in r.stderr and "float32 range" in r.stderr
    p = np.stack([softmax_volume(rng, 2, (4, 5)) for _ in range(2)]).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    r = run("select", "--input", tmp_path / "p.npy", "--reduce", "topq:1e-9", "-k", "1", "--format", "json")
    assert "topq:1e-09" in r.stdout


def test_patches_of_2d_images(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 3, (10, 7)) for _ in range(3)]).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    run("score", "--input", tmp_path / "p.npy", "--patches", "4x3", "--reduce", "max", "-o", tmp_path / "s.csv")
    rows = read_csv_scores(tmp_path / "s.csv")
    assert list(rows[0]) == ["index", "case", "patch", "start0", "start1", "score"]
    assert len(rows) == 3 * 9  # ceil(10/4) * ceil(7/3) patches per image
    for row in rows:
        n, y, x = int(row["index"]), int(row["start0"]), int(row["start1"])
        want = entropy(p[n].astype(np.float64))[y:y + 4, x:x + 3].max()
        assert abs(float(row["score"]) - want) < 1e-5 * max(1, want)
    r = run("select", "--input", tmp_path / "p.npy", "--patches", "4x3", "--reduce", "max", "-k", "3",
            "--per-case", "1")
    sel = [line.split(",") for line in r.stdout.strip().splitlines()[1:]]
    assert sorted(int(s[1]) for s in sel) == [0, 1, 2]  # one patch of each image
    for s in sel:  # each the best patch of its image
        assert float(s[-1]) == max(float(row["score"]) for row in rows if row["index"] == s[1])
    r = run("select", "--input", tmp_path / "p.npy", "--patches", "4x3", "-k", "4", "--per-case", "1", code=2)
    assert "only 3 patches can be selected" in r.stderr


def test_a_list_of_npz_members_one_per_case(tmp_path, rng):
    p = np.stack([softmax_volume(rng, 2, (4, 5)) for _ in range(3)]).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    masks = [(rng.random((4, 5)) < 0.4).astype(np.uint8) for _ in range(3)]
    np.savez(tmp_path / "m.npz", **{f"m{n}": masks[n] for n in range(3)})
    spec = ",".join(f"{tmp_path}/m.npz:m{n}" for n in range(3))
    run("score", "--input", tmp_path / "p.npy", "--reduce", "sum", "--ignore-mask", spec, "-o", tmp_path / "s.npy")
    want = [entropy(p[n].astype(np.float64))[masks[n] == 0].sum() for n in range(3)]
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, rtol=1e-5)
    r = run("score", "--input", tmp_path / "p.npy", "--reduce", "sum", "--ignore-mask",
            f"{tmp_path}/m.npz:m0,{tmp_path}/m.npz:m0,{tmp_path}/m.npz:m1", "-o", tmp_path / "t.npy", code=2)
    assert "named twice" in r.stderr


def test_many_classes_are_summed_as_rows_are(tmp_path):
    np.save(tmp_path / "u.npy", np.full((1, 20000, 3), 1 / 20000, np.float32))
    run("score", "--input", tmp_path / "u.npy", "--reduce", "mean", "-o", tmp_path / "s.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), [np.log(20000)], rtol=2e-6)


def test_k_beyond_the_slices_of_uneven_cases_names_the_true_count(tmp_path, rng):
    for n, z in enumerate((2, 3, 2)):
        write_nifti(tmp_path / f"c{n}.nii", softmax_volume(rng, 2, (z, 4, 5)).transpose(3, 2, 1, 0).astype(np.float32))
    r = run("select", "--input", f"{tmp_path}/c*.nii", "--slices", "0", "-k", "8", code=2)
    assert "only 7 slices can be selected (3 cases)" in r.stderr
    (tmp_path / "ex.txt").write_text("1\n")
    r = run("select", "--input", f"{tmp_path}/c*.nii", "--slices", "0", "-k", "5", "--per-case", "2", "--exclude",
            tmp_path / "ex.txt", code=2)
    assert "only 4 slices can be selected" in r.stderr
    run("select", "--input", f"{tmp_path}/c*.nii", "--slices", "0", "-k", "7")


def test_patch_sizes_out_of_range_are_usage_errors(tmp_path, rng):
    np.save(tmp_path / "p.npy", np.stack([softmax_volume(rng, 2, (4, 5))]).astype(np.float32))
    for size in ("9223372036854775807", "2x 2", "0", "2x", "-3"):
        run("score", "--input", tmp_path / "p.npy", "--patches", size, "-o", tmp_path / "s.csv", code=2)
    assert not (tmp_path / "s.csv").exists()
