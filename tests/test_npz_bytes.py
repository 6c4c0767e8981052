"""Spectrum's .npz files have bytes that depend on the counts only: np.savez forces ZIP64 records
whose bytes changed between Python 3.11 patch releases (3.11.2 on a worker and 3.11.7 on the login
node wrote different files for the same counts), so spectrum.save_npz writes plain, stored ZIP
records with a fixed date and mode; np.load still reads them."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np

from taggerflow.spectrum import save_npz


def _local_header_extras(data: bytes) -> list[bytes]:
    extras, pos = [], 0
    while data[pos:pos + 4] == b"PK\x03\x04":
        (_, _, _, _, _, _, size, _, name_len, extra_len) = struct.unpack("<HHHHHIIIHH", data[pos + 4:pos + 30])
        extras.append(data[pos + 30 + name_len:pos + 30 + name_len + extra_len])
        pos += 30 + name_len + extra_len + size
    return extras


def test_npz_reads_back_and_has_no_zip64_or_clock_in_it():
    arrays = {"counts_flow": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
              "pt_edges": np.array([20.0, 50.0, 1000.0]), "classes": np.array(["tau", "jet"]),
              "entries": np.int64(7), "path": np.array("DY/nano_dy.root")}
    buf = io.BytesIO()
    save_npz(buf, **arrays)
    data = buf.getvalue()
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    assert list(loaded.files) == list(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == np.asarray(value).dtype
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == [f"{n}.npy" for n in arrays]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert {i.external_attr >> 16 for i in infos} == {0o644}
    assert all(i.extra == b"" for i in infos)                 # no ZIP64 record in the central directory
    assert _local_header_extras(data) == [b""] * len(arrays)   # nor in the local headers
    again = io.BytesIO()
    save_npz(again, **arrays)
    assert again.getvalue() == data
