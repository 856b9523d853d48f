"""The run's cost cap (`--max-cost`): what was paid, and what requests in flight reserve.

The cap covers the whole run folder, earlier invocations included: every request reserves its
estimated cost bound before it is sent and settles at what the API billed. A reservation that
does not fit waits for the requests in flight to settle (their real cost, usually well under
their bound, replaces it) and tries again; the run stops (exit status 4) only when nothing is in
flight and the next request's bound still exceeds what is left of the cap. A Batch API line
reserves without waiting (`reserve`): its batch may take hours to settle.
"""

from __future__ import annotations

import asyncio

from pipeline.errors import PipelineError


class CostCapReached(PipelineError):
    """The next request would take the run past `--max-cost`."""


class Budget:
    """The run's spending against its cap: what was paid, and what requests in flight reserve."""

    def __init__(self, cap: float | None, spent: float = 0.0) -> None:
        self.cap = cap
        self.spent = spent  # paid so far, earlier invocations of the run included
        self.reserved = 0.0  # estimated cost of the requests in flight
        self.open = 0  # reservations in flight, not yet settled
        self.reached = False  # a request was refused: the run stops taking rows
        self._settled = asyncio.Event()  # set by each settlement (asyncio binds it lazily)

    def _fits(self, usd: float) -> bool:
        return self.cap is None or self.spent + self.reserved + usd <= self.cap

    def _refuse(self, usd: float) -> CostCapReached:
        self.reached = True
        left = max(0.0, (self.cap or 0.0) - self.spent - self.reserved)
        msg = (
            f"cost cap ${self.cap:.2f} reached: the next request may cost up to ${usd:.4f}, "
            f"more than the ${left:.4f} left"
        )
        return CostCapReached(msg)

    def reserve(self, usd: float) -> float:
        """Reserve `usd` for a request about to be sent; raise `CostCapReached` if it does not fit."""
        if not self._fits(usd):
            raise self._refuse(usd)
        self.reserved += usd
        self.open += usd > 0
        return usd

    async def reserve_when_free(self, usd: float) -> float:
        """Reserve `usd`, first waiting for requests in flight to settle if it does not fit.

        Raises `CostCapReached` once nothing is in flight and it still does not fit, or once
        another request was refused (the run is stopping).
        """
        while not self._fits(usd):
            if self.open == 0 or self.reached:
                raise self._refuse(usd)
            # Set wakes every waiter at once; each checks again, the first to fit reserves.
            self._settled.clear()
            await self._settled.wait()
        return self.reserve(usd)

    def settle(self, reserved: float, paid: float) -> None:
        """Replace a reservation by what the call cost (0 when it was not billed)."""
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += paid
        if reserved > 0:
            self.open = max(0, self.open - 1)
        self._settled.set()
