"""SGD: plain sequential fine-tuning of the shared backbone, the lower bound that the other methods improve on.

Nothing protects earlier tasks: each task trains the whole backbone (and its own head) with the release's
recipe, so the backbone drifts away from what the earlier, frozen heads were trained on."""
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.shared_method import Method

SPEC = MethodSpec("SGD", SHARED, "the whole backbone, in turn, and a head", "sequential fine-tuning, the lower bound",
                  order=120, paper_column=3, search={TUNED_LR: LR_SEARCH})


@implements(SPEC)
class SGD(Method):
    """Every hook is the shared recipe's; the name is the continual-learning literature's (the optimizer is
    the recipe's Adam)."""
