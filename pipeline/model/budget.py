"""The run's cost cap (`--max-cost`): what was paid, and what requests in flight reserve.

The cap covers the whole run folder, earlier invocations included: every request reserves its
estimated cost before it is sent and settles at what the API billed; a request whose reservation
would pass the cap is not sent, and the run stops with exit status 4.
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class CostCapReached(PipelineError):
    """The next request would take the run past `--max-cost`."""


class Budget:
    """The run's spending against its cap: what was paid, and what requests in flight reserve."""

    def __init__(self, cap: float | None, spent: float = 0.0) -> None:
        self.cap = cap
        self.spent = spent  # paid so far, earlier invocations of the run included
        self.reserved = 0.0  # estimated cost of the requests in flight
        self.reached = False  # a request was refused: the run stops taking rows

    def reserve(self, usd: float) -> float:
        """Reserve `usd` for a request about to be sent; raise `CostCapReached` past the cap."""
        if self.cap is not None and self.spent + self.reserved + usd > self.cap:
            self.reached = True
            msg = (
                f"cost cap ${self.cap:.2f} reached: ${self.spent:.4f} spent, "
                f"${self.reserved:.4f} in flight"
            )
            raise CostCapReached(msg)
        self.reserved += usd
        return usd

    def settle(self, reserved: float, paid: float) -> None:
        """Replace a reservation by what the call cost (0 when it was not billed)."""
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += paid
