"""``signals_held``: a signal that arrives during the block is delivered, to the process's own handler, after it."""

from __future__ import annotations

import signal

import pytest

from ragline.held_signals import signals_held


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_block_reaches_its_handler_once_the_block_ends(number: signal.Signals) -> None:
    order: list[str] = []
    previous = signal.signal(number, lambda signum, frame: order.append(f"handled {signum}"))
    try:
        with signals_held():
            signal.raise_signal(number)
            signal.raise_signal(number)
            order.append("block ended")
        order.append("after")
        assert signal.getsignal(number) is not None and order == ["block ended", f"handled {number}", "after"]
    finally:
        signal.signal(number, previous)


def test_an_exception_from_the_handler_is_raised_after_the_block() -> None:
    """As the CLI's SIGTERM handler raises SystemExit: the block (an import) completes first."""
    done: list[str] = []

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with pytest.raises(SystemExit), signals_held():
            signal.raise_signal(signal.SIGTERM)
            done.append("the whole block")
        assert done == ["the whole block"] and signal.getsignal(signal.SIGTERM) is terminate
    finally:
        signal.signal(signal.SIGTERM, previous)
