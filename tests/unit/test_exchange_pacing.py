"""How often a long-lived scheduler exchanges news with the fleet view: pure, no Redis."""

from __future__ import annotations

from typing import cast

from hostsched.config import Config
from hostsched.scheduler import Scheduler
from hostsched.store import Store


def paced(scheduler: Scheduler, placed: int, news: int, refused: bool = False) -> float:
    """The wait after an exchange that came ``placed`` placements after the last one."""
    scheduler.stats.placements += placed
    scheduler._pace_exchanges(news, refused)
    return scheduler.EXCHANGE_EVERY * (1 << scheduler._exchange_doublings)


def test_the_wait_grows_while_news_is_none_or_costs_more_than_it_informs() -> None:
    scheduler = Scheduler(Config(), cast(Store, None), long_lived=True)
    every, most = scheduler.EXCHANGE_EVERY, scheduler.EXCHANGE_DOUBLINGS
    assert [paced(scheduler, 1, 0) for _ in range(most + 2)] == [
        every * 2**k for k in [*range(1, most + 1), most, most]
    ]
    assert paced(scheduler, 1, 0, refused=True) == every  # the view was wrong
    assert paced(scheduler, 2, 20) == 2 * every  # 10 summaries per placement: too many
    assert paced(scheduler, 2, 2) == 2 * every  # one per placement: kept
    assert paced(scheduler, 4, 2) == every  # half a summary per placement: sooner
    assert paced(scheduler, 4, 2) == every  # (not below EXCHANGE_EVERY)
