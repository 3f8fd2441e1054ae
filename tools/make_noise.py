"""Write synthetic background-noise clips for the "noise" augmentation (dataset/noise/).

Real recorded noise (e.g. MUSAN, or recordings of the target environment) is better;
drop such files into the same folder. These clips exist so the shipped
configs/augmentation.json works out of the box (utils/data/builders/noise.py).
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.data.builders import noise  # noqa: E402


@dataclass
class Arguments:
    output_dir: str = field(default="dataset/noise", metadata={"help": "folder for the WAV files"})
    seconds: float = field(default=3.0, metadata={"help": "length of each clip"})
    seed: int = field(default=0, metadata={"help": "random seed (same seed, same files)"})

    def __post_init__(self):
        if self.seconds <= 0:
            raise UsageError(f"--seconds={self.seconds}: must be positive")


def make_noise(args: Arguments) -> None:
    print_config("make_noise.py configuration", args)
    print(noise.write_noise_clips(**asdict(args)))


def main(argv=None) -> int:
    args = parse_args(Arguments, argv, description=__doc__)
    return guarded(lambda: make_noise(args))


if __name__ == "__main__":
    sys.exit(main())
