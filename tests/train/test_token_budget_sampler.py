"""TokenBudgetSampler: micro-batches packed by tokens, the same for any rank layout and after a resume."""

import pytest

from semvlp.model.inputs import TokenBudget
from semvlp.train.run_data import TokenBudgetSampler

BUDGET = TokenBudget(tokens=60, max_samples=4, max_text_len=12, max_regions=6)


def _lengths(key):
    _, index = key
    return 3 + index % 10, 1 + index % 6


def _sampler(accumulation=2, world=1, rank=0, start=0, steps=12, lengths=_lengths):
    return TokenBudgetSampler(37, lengths, BUDGET, accumulation, world, rank, seed=5, start_step=start,
                              max_steps=steps)


def test_each_micro_batch_takes_the_following_samples_while_they_fit():
    batches = list(_sampler())
    assert len(batches) == len(_sampler()) == 24
    keys = [k for b in batches for k in b]
    assert keys[:37] and sorted(i for _, i in keys[:37]) == list(range(37))  # the first epoch, each sample once
    for batch, following in zip(batches, batches[1:]):
        text, regions = zip(*map(_lengths, batch))
        assert BUDGET.fits(text, regions)
        assert not BUDGET.fits(text + (_lengths(following[0])[0],), regions + (_lengths(following[0])[1],))


def test_two_ranks_read_what_one_process_with_twice_the_accumulation_reads():
    single = list(_sampler(accumulation=4))
    ranks = [list(_sampler(accumulation=2, world=2, rank=r)) for r in range(2)]
    interleaved = [b for pair in zip(*ranks) for b in pair]
    assert interleaved == single


def test_a_resumed_sampler_continues_where_the_run_was():
    assert list(_sampler(start=5)) == list(_sampler())[5 * 2:]


def test_a_sample_longer_than_the_budget_allows_is_an_error():
    with pytest.raises(ValueError, match="longest sample"):
        list(_sampler(lengths=lambda key: (13, 1)))
