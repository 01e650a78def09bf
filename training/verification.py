"""What re-evaluating a method's saved tasks found, and why a saved task cannot be re-evaluated with a run's backbone
and data: the family objects (training.families) re-evaluate, the report tallies what they found."""
from collections import Counter
from dataclasses import dataclass, field

from dataset.task import TaskInfo
from training.saved import PIXELS, differing_settings


@dataclass
class Verification:
    """What re-evaluating one method's saved tasks found."""

    equal: int = 0
    mismatches: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of tasks
    checked_as: str = "re-loaded onto a freshly built backbone and re-evaluated on their validation split"
    compared_with: str = "the recorded ones"

    @property
    def checked(self) -> int:
        return self.equal + len(self.mismatches)

    def as_dict(self) -> dict:
        """What result/verification.json holds for the method: tasks equal to their record, the mismatches, and
        how many tasks were not re-evaluated for each reason."""
        return {"equal": self.equal, "mismatches": self.mismatches, "skipped": dict(self.skipped)}

    def summary(self) -> str:
        """One sentence for the report."""
        parts = []
        if self.checked:
            parts.append(f"{self.checked} task(s) {self.checked_as}: "
                         + (f"all re-evaluated accuracies equal {self.compared_with}" if not self.mismatches else
                            f"**{len(self.mismatches)} MISMATCH(ES)**: " + "; ".join(self.mismatches)))
        parts += [f"{count} task(s) not re-evaluated: {reason}" for reason, count in self.skipped.items()]
        return ". ".join(parts) + "."


@dataclass(frozen=True)
class Recorded:
    """What a method's result folder says of its finished tasks, for their re-evaluation to be compared with."""

    method: str
    finished: list[TaskInfo]  # the tasks of the method's CSV, in run order
    configs: dict[int, dict]  # task id -> the settings of each finished task that has a weights file
    last_row: dict[str, float] | None  # the accuracy matrix's last row, by task name (None: no matrix)


def describe(config: dict) -> str:
    return f"{config.get('arch')}, backbone {config.get('backbone')}, {config.get('image_size')} px"


def skip_reason(expected: dict, config: dict) -> str | None:
    """Why a saved task cannot be re-evaluated with this run's backbone and data, or None if it can."""
    differing = differing_settings(config, expected, "verify")
    if not differing:
        return None
    if any(config.get(key) != expected[key] for key in PIXELS):
        return f"settings differ (trained with {describe(config)}; this report has {describe(expected)})"
    return "the data differ (its images or labels are not the ones --data gives now)"
