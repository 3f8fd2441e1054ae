"""evaluation.py across processes (torchrun, accelerate launch): each process decodes its share of the test
set, every decoded clip is streamed to a jsonl part file at once, and process 0 gathers the shares into the
one report a single process would have written.

Why part files per process plus a gather at the end, rather than sending every batch to process 0:
decoding needs no communication at all (a slow or crashed process holds up no one while it runs, and no
collective can time out mid-run), an interrupted run keeps every line each process wrote, and the final
gather goes through torch.distributed, so it also works on several machines that share no disk.

The shares are strided (process r takes clips r, r + N, r + 2N, ...), so a manifest ordered by length or
speaker gives every process about the same amount of audio and the processes finish together.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import IO, List, Optional, Tuple

# The processes meet only at the end; one that got longer clips may arrive long after the others. A process
# that crashed ends the launcher's whole group, so this bound only matters for a process that hangs.
GATHER_TIMEOUT = timedelta(hours=24)


@dataclass
class DecodedClip:
    """One line of a part file: the clip's index in its (filtered) set and what was decoded. `set` numbers the
    run's sets (0: --test_data, then each --retention_data); `detection` is utils.core.lid.Detection's fields."""
    index: int
    reference: str
    hypothesis: str
    no_speech: bool
    detection: Optional[dict] = None
    set: int = 0


def part_folder(report_path: str) -> str:
    """Where the processes stream their clips while the run lasts: beside the report."""
    return report_path + ".parts"


def read_part_files(folder: str) -> List[DecodedClip]:
    """Every clip the part files in `folder` hold (an interrupted run's result), in test-set order."""
    clips = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                # A process killed mid-write leaves at most its last line cut short.
                for line in f:
                    try:
                        clips.append(DecodedClip(**json.loads(line)))
                    except (ValueError, TypeError):
                        continue
    return sorted(clips, key=lambda clip: clip.index)


class ShardedEvaluation:
    """The process's place in the run (from the launcher's RANK/WORLD_SIZE/LOCAL_RANK), its share of the clips
    and its part file. Use as a context manager around decoding and scoring."""

    def __init__(self, report_path: Optional[str] = None):
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.folder = part_folder(report_path) if report_path else None
        self.part_path = (os.path.join(self.folder, f"rank{self.rank}-of-{self.world_size}.jsonl")
                          if self.folder else None)
        self.clips: List[DecodedClip] = []
        self._file: Optional[IO[str]] = None
        self._group = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __enter__(self) -> "ShardedEvaluation":
        import torch

        if self.world_size > 1:
            import torch.distributed as dist

            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            # gloo: the group carries one gather of Python objects at the end, on any device.
            dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
            self._group = True
        if self.folder:
            os.makedirs(self.folder, exist_ok=True)
            if self.is_main:
                # Part files of an earlier run with another process count; each process truncates its own.
                for name in os.listdir(self.folder):
                    if name.endswith(".jsonl") and not name.endswith(f"-of-{self.world_size}.jsonl"):
                        os.remove(os.path.join(self.folder, name))
            self._file = open(self.part_path, "w", encoding="utf-8")
        return self

    def indices(self, count: int) -> range:
        """This process's clips among `count`."""
        return range(self.rank, count, self.world_size)

    def record(self, index: int, reference: str, hypothesis: str, no_speech: bool, detection=None,
               set_number: int = 0) -> None:
        """Keep one decoded clip (its language `detection`, a utils.core.lid.Detection, when measured), and put
        it on disk now."""
        clip = DecodedClip(int(index), reference, hypothesis, bool(no_speech),
                           asdict(detection) if detection is not None else None, int(set_number))
        self.clips.append(clip)
        if self._file is not None:
            self._file.write(json.dumps(asdict(clip), ensure_ascii=False) + "\n")
            self._file.flush()

    def gather(self, count: int, set_number: int = 0) -> Optional[Tuple[list, list, int, list]]:
        """(references, hypotheses, clips judged to hold no speech, language detections) over all `count` clips
        of set `set_number` in its order, in process 0; None in the others. Every process calls it, set by set."""
        from utils.core.lid import Detection

        mine = [clip for clip in self.clips if clip.set == set_number]
        shares = [mine]
        if self.world_size > 1:
            import torch.distributed as dist

            shares = [None] * self.world_size if self.is_main else None
            dist.gather_object(mine, shares, dst=0)
        if not self.is_main:
            return None
        references, hypotheses, no_speech, detections = [None] * count, [None] * count, 0, [None] * count
        for clip in (clip for share in shares for clip in share):
            references[clip.index], hypotheses[clip.index] = clip.reference, clip.hypothesis
            no_speech += clip.no_speech
            detections[clip.index] = Detection(**clip.detection) if clip.detection is not None else None
        missing = [i for i, text in enumerate(hypotheses) if text is None]
        if missing:
            raise RuntimeError(f"{len(missing)} of {count} clips were decoded by no process (first: {missing[0]})")
        return references, hypotheses, no_speech, detections

    def _barrier(self) -> None:
        if self._group:
            import torch.distributed as dist

            dist.barrier()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is not None:
            self._file.close()
        if self.folder:
            if exc_type is None:
                # Process 0 has written the report: only now may the part files go.
                self._barrier()
                os.remove(self.part_path)
                self._barrier()
                if self.is_main and not os.listdir(self.folder):
                    os.rmdir(self.folder)
            elif self.clips:
                print(f"rank {self.rank}: the {len(self.clips)} clips decoded before the interruption are in "
                      f"{self.part_path}", flush=True)
        if self._group:
            import torch.distributed as dist

            dist.destroy_process_group()
