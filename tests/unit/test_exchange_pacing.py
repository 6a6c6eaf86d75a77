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
    worth = int(8 * scheduler.NEWS_PER_PLACEMENT)  # news that 8 placements are worth
    assert paced(scheduler, 8, 3 * worth) == 2 * every  # too much news: wait longer
    assert paced(scheduler, 8, worth) == 2 * every  # as much as it is worth: kept
    assert paced(scheduler, 8, worth // 2) == every  # half of it: sooner
    assert paced(scheduler, 8, worth // 2) == every  # (not below EXCHANGE_EVERY)
