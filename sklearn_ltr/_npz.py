"""Bounded reading of the ``.npy`` members of an ``.npz`` archive (a zip file).

``numpy.load`` trusts an archive: it decompresses whatever a member holds, with any
compression method the zip module knows, and allocates the shape a member's header
declares before it reads the data. A small crafted file can then take gigabytes and
minutes (a "zip bomb"), or fail with an exception of the zip module. Here every member
is read only after its sizes were checked against what the caller expects:

* only the members asked for are opened;
* a member must be stored or deflated (what ``numpy.savez`` and
  ``numpy.savez_compressed`` write), not encrypted, and its declared size must be
  what the expected dtype and shape take, plus a small ``.npy`` header; the size
  must also be one its compressed bytes can produce (at most ~1032 bytes per byte
  for deflate), so decompression never produces more than the archive can hold;
* the ``.npy`` header is read with a length limit and must declare exactly the
  expected dtype and shape (fortran order allowed) before any data are read;
* the data are read to the end of the member, so that the zip's CRC-32 is checked.

Every failure is a :class:`ValueError` saying which member is wrong and why. This
module imports no other module of the package.
"""

import io
import os
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["Archive", "NPY_MAGIC"]

NPY_MAGIC = b"\x93NUMPY"
# The .npy header of an array of a plain dtype is about 128 bytes; numpy pads it to
# a multiple of 64.
_MAX_NPY_HEADER = 4096
_NPY_PREFIX = {(1, 0): 10, (2, 0): 12}  # magic, version, header length field
# Deflate codes a 258-byte match in at least 2 bits: at most about 1032 bytes of
# output per compressed byte (zlib's technical details), plus a block's few bytes.
_DEFLATE_RATIO = 1032
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_ENCRYPTED, _PATCHED, _STRONG = 0x1, 0x20, 0x40
# What the zip module raises on a damaged archive (besides BadZipFile): a
# decompression error, a short read, a bad seek, an unsupported feature.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
               OSError, ValueError, struct.error, OverflowError, NotImplementedError,
               RuntimeError, KeyError, IndexError)


class Archive:
    """An ``.npz`` archive opened for bounded reading.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        The archive.

    Raises
    ------
    FileNotFoundError
        If ``file`` is a path that does not exist.
    ValueError
        If it is not a zip archive (the message says when it is a single ``.npy``
        array instead), or its directory is damaged or names a member twice.
    """

    def __init__(self, file):
        self._zip, start = None, 0
        if isinstance(file, (str, os.PathLike)):
            self.size = os.path.getsize(file)
        else:
            start = file.tell()
            self.size = file.seek(0, io.SEEK_END)
            file.seek(start)
        try:
            self._zip = zipfile.ZipFile(file)
            infos = self._zip.infolist()
        except FileNotFoundError:
            raise
        except _ZIP_ERRORS as exc:
            if _starts_with_npy_magic(file, start):
                raise ValueError("it holds a single array, not an .npz archive "
                                 "of several.") from None
            raise ValueError(f"it cannot be read as a numpy .npz archive "
                             f"({_reason(exc)}).") from None
        self._infos = {info.filename: info for info in infos}
        if len(self._infos) != len(infos):
            self.close()
            raise ValueError("its directory names a member twice.")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._zip is not None:
            self._zip.close()

    @property
    def max_elements(self):
        """The most bytes (so array entries) the archive's members can decompress to."""
        return self.size * _DEFLATE_RATIO

    @property
    def names(self):
        """The arrays of the archive: member names without their ``.npy`` suffix."""
        return {name[:-4] if name.endswith(".npy") else name for name in self._infos}

    def _member(self, name, data_bytes, slack):
        """The ZipInfo of array ``name``, after checking its sizes and method.

        ``data_bytes`` is what the expected array takes; the member may be larger by
        the .npy header only (up to ``slack`` more for an array of unknown length).
        """
        info = self._infos.get(name + ".npy")
        if info is None:
            raise ValueError(f"the member {name}.npy is missing.")
        if info.flag_bits & (_ENCRYPTED | _PATCHED | _STRONG):
            raise ValueError(f"the member {name}.npy is encrypted; model files are "
                             f"never encrypted.")
        method = _METHODS.get(info.compress_type)
        if method is None:
            raise ValueError(
                f"the member {name}.npy is compressed with zip method "
                f"{info.compress_type}; numpy writes stored (0) or deflated (8) "
                f"members only.")
        produce = info.compress_size * (1 if method == "stored" else _DEFLATE_RATIO)
        if (info.compress_size > self.size or info.file_size > produce + 64
                or (method == "stored" and info.file_size != info.compress_size)):
            raise ValueError(
                f"the member {name}.npy declares {info.file_size} bytes from "
                f"{info.compress_size} {method} bytes in an archive of {self.size} "
                f"bytes, which is impossible.")
        extra = info.file_size - data_bytes
        longest = _NPY_PREFIX[(2, 0)] + _MAX_NPY_HEADER + slack
        if not _NPY_PREFIX[(1, 0)] < extra <= longest:
            raise ValueError(
                f"the member {name}.npy holds {info.file_size} bytes, but the array it "
                f"should hold takes {data_bytes} bytes.")
        return info

    def read(self, name, dtype, shape=None, *, max_length=0):
        """Read the array ``name`` of exactly ``dtype`` and ``shape``.

        Parameters
        ----------
        name : str
            Member name without ``.npy``.
        dtype : numpy dtype
        shape : tuple of int, default=None
            None: a 1-D array of at most ``max_length`` entries.
        max_length : int, default=0
            Longest array accepted when ``shape`` is None.

        Returns
        -------
        array : ndarray
            A new, writeable array.

        Raises
        ------
        ValueError
            If the member is missing, of another method, size, dtype or shape than
            expected, truncated, or corrupted (its CRC-32 does not match).
        """
        dtype = np.dtype(dtype)
        known = shape is not None
        expected = (int(np.prod(shape, dtype=object)) * dtype.itemsize if known else 0)
        info = self._member(name, expected,
                            0 if known else max_length * dtype.itemsize)
        try:
            with self._zip.open(info) as f:
                header_size, fortran, file_shape, file_dtype = _read_npy_header(f)
                if file_dtype != dtype or (file_shape != shape if known else (
                        len(file_shape) != 1 or file_shape[0] > max_length)):
                    raise ValueError(
                        f"its .npy header declares dtype {file_dtype.str} and shape "
                        f"{file_shape}, but dtype {dtype.str} and shape "
                        f"{shape if known else f'(n,) with n <= {max_length}'} were "
                        f"expected")
                n_bytes = int(np.prod(file_shape, dtype=object)) * dtype.itemsize
                if info.file_size != header_size + n_bytes:
                    raise ValueError(f"it holds {info.file_size - header_size} bytes "
                                     f"of data for an array of {n_bytes} bytes")
                data = f.read(n_bytes)
                # Reading past the end checks the CRC-32 of the whole member.
                if len(data) != n_bytes or f.read(1):
                    raise ValueError("its data are truncated")
        except _ZIP_ERRORS as exc:
            raise ValueError(f"the member {name}.npy cannot be read "
                             f"({_reason(exc)}).") from None
        array = np.frombuffer(data, dtype=dtype).copy()
        if fortran:
            return array.reshape(file_shape[::-1]).transpose()
        return array.reshape(file_shape)


def _read_npy_header(f):
    """Header size, fortran order, shape and dtype of the .npy stream ``f``."""
    prefix = f.read(8)
    version = tuple(prefix[6:8])
    if prefix[:6] != NPY_MAGIC or version not in _NPY_PREFIX:
        raise ValueError("it is not a .npy array of format version 1.0 or 2.0")
    size_field = f.read(_NPY_PREFIX[version] - 8)
    length = int.from_bytes(size_field, "little") if len(size_field) in (2, 4) else -1
    if not 0 < length <= _MAX_NPY_HEADER:
        raise ValueError(f"its .npy header is {length} bytes long")
    raw = f.read(length)
    if len(raw) != length:
        raise ValueError("its .npy header is truncated")
    # numpy's own parser (a literal_eval of a dict) on the bounded header.
    stream = io.BytesIO(prefix + size_field + raw)
    np.lib.format.read_magic(stream)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = read_header(stream, max_header_size=_MAX_NPY_HEADER)
    except (TypeError, SyntaxError) as exc:
        raise ValueError(f"its .npy header cannot be parsed ({exc})") from None
    return _NPY_PREFIX[version] + length, bool(fortran), tuple(shape), dtype


def _starts_with_npy_magic(file, start):
    try:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as f:
                return f.read(6) == NPY_MAGIC
        file.seek(start)
        head = file.read(6)
        file.seek(start)
        return head == NPY_MAGIC
    except (OSError, ValueError):
        return False


def _reason(exc):
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
