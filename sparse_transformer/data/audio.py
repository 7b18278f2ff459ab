"""Raw audio as bytes: decode, mono, 12 kHz, 8-bit mu-law (paper 7.4, Table 4).

The paper models "classical music ... 12 kHz ... 8-bit mu-law" as a byte stream with the same
architecture as text, only the position embeddings differ (row/column of a matrix of width l,
paper 5.3). A prepared audio data set is one uint8 stream per split (tracks back to
back); training reads random windows. Splits are made by whole tracks (90/5/5 of the files,
shuffled with seed 0), so validation and test measure unseen music.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis); resampling is
`sparse_transformer.data.resample` (numpy polyphase, no scipy). Files are decoded in parallel
worker processes with a tqdm progress bar.

Shapes: T samples (frames), C channels.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

# The codec lives in the leaf module shared with sampling; it is re-exported here, where
# preparation uses it.
from sparse_transformer.codecs import (
    MU,
    mu_law_decode,
    mu_law_encode,
    to_mono,
    write_audio_samples,
)
from sparse_transformer.data.atomic import prepared_writer
from sparse_transformer.data.images import split_indices
from sparse_transformer.data.progress import progress_enabled
from sparse_transformer.data.resample import resample

__all__ = [
    "AUDIO_SUFFIXES",
    "SAMPLE_RATE",
    "decode_file",
    "list_audio_files",
    "mu_law_decode",
    "mu_law_encode",
    "prepare_audio_folder",
    "prepare_wesnoth_music",
    "to_mono",
]

SAMPLE_RATE = 12000  # paper: 12 kHz
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
WESNOTH_DIR = "/usr/share/games/wesnoth/1.16/data/core/music"
SILENCE_PEAK = 1.0 / 32768  # below one 16-bit step: nothing audible was recorded


def list_audio_files(folder: str | Path) -> list[Path]:
    """WAV/FLAC/OGG files under ``folder`` (recursively), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def decode_file(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode one file to mono float32 [T'] at ``sample_rate`` (values in [-1, 1]).

    Raises ValueError for an unreadable file, an empty one, or a silent one (peak below one
    16-bit step): silence would only teach the model to predict silence.
    """
    import soundfile as sf

    path = Path(path)
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise ValueError(f"{path}: cannot decode audio ({err})") from None
    if x.shape[0] == 0:
        raise ValueError(f"{path}: audio file has no samples")
    mono = to_mono(x, str(path))
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise ValueError(f"{path}: audio is silent (peak {peak:.2g}); remove it from the folder")
    return resample(mono, rate, sample_rate)


def _encode_worker(args: tuple[str, int]) -> tuple[str, np.ndarray]:
    path, rate = args
    return path, mu_law_encode(decode_file(path, rate))


def _encode_all(files: list[Path], rate: int, workers: int,
                progress: bool) -> dict[str, np.ndarray]:
    jobs = [(str(f), rate) for f in files]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="decode+resample", unit="file")
    out: dict[str, np.ndarray] = {}
    try:
        if workers <= 1:
            for job in jobs:
                p, q = _encode_worker(job)
                out[p] = q
                if bar:
                    bar.update()
        else:
            # spawn: the parent may hold torch/OpenMP threads, which fork does not copy safely.
            with mp.get_context("spawn").Pool(workers) as pool:
                for p, q in pool.imap_unordered(_encode_worker, jobs):
                    out[p] = q
                    if bar:
                        bar.update()
    finally:
        if bar:
            bar.close()
    return out


def prepare_audio_folder(out_dir: str | Path, *, path: str | Path | None = None,
                         name: str | None = None, sample_rate: int = SAMPLE_RATE,
                         workers: int | None = None, seed: int = 0, progress: bool = True,
                         source: str | None = None, license: str = "as the source audio") -> dict:
    """Every WAV/FLAC/OGG under ``path`` -> 8-bit mu-law streams at ``sample_rate``, split by track.

    All files are decoded and checked before anything is written (a bad file leaves no
    partial data set). Returns the meta dict (counts are samples = bytes per split; ``tracks``
    lists each file's split, offset and length).
    """
    if path is None:
        raise ValueError("audio-folder needs --path DIR (a folder of WAV/FLAC/OGG files)")
    files = list_audio_files(path)
    if not files:
        raise ValueError(f"{path}: no .wav/.flac/.ogg files found")
    splits = split_indices(len(files), seed=seed)
    workers = workers or min(len(files), os.cpu_count() or 1)
    coded = _encode_all(files, sample_rate, workers, progress)
    counts = {s: 0 for s in splits}
    tracks = []
    with prepared_writer(out_dir) as w:
        for s, idx in splits.items():
            for i in idx:
                q = coded[str(files[i])]
                tracks.append({"file": str(Path(files[i]).relative_to(path)), "split": s,
                               "offset": counts[s], "samples": int(q.size)})
                w.write(s, q)
                counts[s] += int(q.size)
        w.meta = {"name": name or Path(out_dir).name, "kind": "audio", "sample_rate": sample_rate,
                  "encoding": "mu-law-8", "mu": MU, "source": source or f"audio folder {path}",
                  "license": license, "counts": counts,
                  "seconds": {s: round(n / sample_rate, 1) for s, n in counts.items()},
                  "tracks": tracks}
    return w.meta


def prepare_wesnoth_music(out_dir: str | Path, *, path: str | Path | None = None,
                          workers: int | None = None, cache_dir: str | Path | None = None,
                          progress: bool = True) -> dict:
    """The Battle for Wesnoth soundtrack (Debian wesnoth-1.16-music: 41 OGG tracks, 2.1 h of
    orchestral music; ../shared/data.md A1) -> 12 kHz mu-law, 90/5/5 of the tracks."""
    if path is None:
        from sparse_transformer.data.debian import debian_files

        path = debian_files("wesnoth-1.16-music", WESNOTH_DIR, cache_dir=cache_dir,
                            verbose=progress)
    return prepare_audio_folder(out_dir, path=path, name="wesnoth-music", workers=workers,
                                progress=progress, license="GPL-2+ (Debian wesnoth-1.16-music)",
                                source=f"Wesnoth 1.16 soundtrack, OGG files in {path}")


# ----------------------------------------------------------------------------- registry hooks


# ``progress_enabled()`` is off under ``prepare --no-progress`` (data/progress.py).


def _wesnoth(out_dir: Path, *, source: str | None = None, cache_dir: Path | None = None) -> None:
    prepare_wesnoth_music(out_dir, path=source, cache_dir=cache_dir,
                          progress=progress_enabled())


def _audio_folder(out_dir: Path, *, source: str | None = None,
                  cache_dir: Path | None = None) -> None:
    prepare_audio_folder(out_dir, path=source, progress=progress_enabled())


def _register() -> None:
    from sparse_transformer.data.registry import register_dataset, register_writer

    register_dataset("wesnoth-music", _wesnoth,
                     help="2.1 h of orchestral music (Debian wesnoth-1.16-music), 12 kHz 8-bit "
                          "mu-law, split 90/5/5 by track")
    register_dataset("audio-folder", _audio_folder,
                     help="every WAV/FLAC/OGG under --path DIR -> 12 kHz mu-law, split by file")
    register_writer("audio", write_audio_samples)


_register()
