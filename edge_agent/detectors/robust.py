"""A model of normal that a fault cannot rewrite: robust streaming baselines, sixteen fault channels.

Written by hand: what it must do (stop learning from a fault, hold, calibrate each channel
on the series' own history, in O(1) per reading and a few microseconds of pure Python) is
the product itself, not a solved problem a library offers. The design and every default,
with the data each was chosen on, are in docs/detectors.md.

Why one long file: the per-reading path (``_step``) reads and writes some sixty of the
detector's slots inline, and the slow-phase learning and the state it saves share them; split
across modules they would be functions reaching into one class's private state, and each call
on the per-reading path costs what the 5 µs p99 budget does not have. What does not touch that
state, the statistics of a training window and a channel's calibration, is in
``robust_stats.py``.
"""

from __future__ import annotations

import bisect
import math
import types
from array import array
from typing import Any, ClassVar

import numpy as np

from edge_agent.detectors import base, lattice, rail
from edge_agent.detectors.base import Explanation
from edge_agent.detectors.robust_states import (
    accept_state,
    discrete_states,
    state_explain,
    state_score,
    stored_states,
)
from edge_agent.detectors.robust_stats import (
    ALPHAS,
    TAIL_P,
    anchor_reach,
    backcast,
    calibrate,
    choose_smoothing,
    coarse_lattice,
    daily_component,
    interpolation_gain,
    longest_run,
    longest_within,
    mad_scale,
    operating_levels,
    poisson_at_least,
    rechoose_rate,
    resolution,
    young_bound,
)

# Calibrated channels, in the order of the calibrator lists: the spike channel, then level and
# drift against the plain model of normal, then against the seasonal one, then variance.
# Then the short-term level (an abrupt lasting shift against the short-term predictor), and
# last the slope (a change in the short-term predictor's course: the onset of a ramp).
# Last, the quiet side of the variance channel (explained as ``variance``): the noise fallen
# well below its normal. Then the burst count (see _BURST_AT), and the spike judged from both
# sides (explained as ``spike``): the last reading's residual once the next one is in.
SPIKE, LEVEL, DRIFT, LEVEL_S, DRIFT_S, VAR, SHORT, SLOPE, QUIET, BURST, BACK = range(11)
_IN_RUNS = (LEVEL, DRIFT, LEVEL_S, DRIFT_S, BURST)  # calibrated counting a run of exceedances as one excursion
_N_CAL = 11
_SLOW = 0.01  # the model of normal follows at most this fast (~100 readings)
_SLOW_RATES = tuple(a for a in ALPHAS if a <= _SLOW)  # the predictor's rates no faster than it (see _rechoose_rate)
_LAMBDA_LEVEL = 0.15  # the level channel: EWMA of residuals, ~7 readings
_LAMBDA_DRIFT = 0.02  # the drift channel: EWMA of residuals, ~50 readings
_LAMBDA_VAR = 0.03  # the variance channel: EWMA of |first difference|
_LAMBDA_QUICK = _LAMBDA_LEVEL  # ... and over ~7 readings, for its quiet side's end (see _step)
_LAMBDA_SHORT = 0.3  # the short-term level: EWMA of the predictor's residuals, ~3 readings (_REACQUIRE)
_SD_SHORT = math.sqrt(_LAMBDA_SHORT / (2.0 - _LAMBDA_SHORT))
_V_SHORT_MIN = 0.5 * _SD_SHORT / 1.2533
_LAMBDA_SLOPE = _LAMBDA_DRIFT  # the slope: the predictor's moves averaged over ~50 readings ...
_RATE_SLOPE_REF = 0.05  # ... against a reference following that average (Brown's double smoothing) at this rate
_BETA_SLOPE = _RATE_SLOPE_REF * _RATE_SLOPE_REF / 4.0
# ... its mean |value| on white noise of unit scale is about _SLOPE_WHITE x sqrt(a / (2 - a)), a
# the predictor's rate (3 x 2 M readings through the channel's own statistic: 0.00123 at 0.03,
# 0.00312 at 0.1, 0.00646 at 0.3, that is 0.0100, 0.0136, 0.0154 x it); its spread starts there
# at fit and is floored at half it. Standardised, the statistic is |N(0, 1)|-like there (98 %
# quantile 2.31-2.33, mean excess 0.33-0.34, 1e-6 quantile 4.6-5.0): its prior is _GAUSS.
_SLOPE_WHITE = 0.0136
# After the predictor adopts a level, the slope's average restarts at its reference and holds
# the predictor's moves since: it speaks again once those are its whole memory (~1 / its rate).
_SLOPE_QUIET = round(1.0 / _LAMBDA_SLOPE)
_LEVELS = 4  # operating levels remembered from rebaselines (see _remember_level)


def _slope_white(alpha: float) -> float:
    """The slope channel's mean |value| on white noise of unit scale, at predictor rate ``alpha``."""
    return _SLOPE_WHITE * math.sqrt(alpha / (2.0 - alpha))

_SD_LEVEL = math.sqrt(_LAMBDA_LEVEL / (2.0 - _LAMBDA_LEVEL))  # their spread on independent residuals
_SD_DRIFT = math.sqrt(_LAMBDA_DRIFT / (2.0 - _LAMBDA_DRIFT))
_DRIFT_MIN = 1.0  # ... and a drift must reach at least a whole noise scale
_V_LEVEL_MIN = 0.5 * _SD_LEVEL / 1.2533  # their mean |value| on normal readings, at least half
_V_DRIFT_MIN = 0.5 * _SD_DRIFT / 1.2533  # what independent residuals would give (x the scale)
# The trend estimate's own noise: E|trend - its average over 1 / alpha| of the model of normal
# (Brown's smoother at rate alpha) on white noise of unit scale is 0.105 alpha^1.5 (2 M readings:
# 1.72e-5 at alpha 0.003, 1.05e-4 at 0.01), and a series' estimate of it over its ~500-reading
# memory came out 0.6-2.0x that on 16 white-noise seeds. What is beyond twice it (in quadrature)
# is the trend's own variability: a stationary series' band does not grow from its estimator.
_TREND_NOISE = 2.0 * 0.105
_ABS_FLOOR = 1e-12  # no scale below this: scores stay finite for any finite reading (|x| <= 1e15)
_VAR_CLIP = 4.0  # one difference counts at most 4 x its normal size (a spike is not noise)
_LEVEL_CLIP = 4.0  # a residual counts at most 4 scales towards the level and drift channels ...
_LEVEL_CLIP_THR = 2.0  # ... or twice their thresholds, if more (else they could never reach them)
_CLIP = 2.5  # ... and at most 2.5 scales towards a scale, a spread or the predictor (Huber)
_TAIL_ODDS = TAIL_P / (1.0 - TAIL_P)
# The slow statistics and the tails learn on calm readings in turn, one part per reading over a
# cycle of _SLOW_EVERY (each step that much larger): no reading pays for all of them (p99 cost).
# A reading that teaches the daily profile does no part when it can be spared (see _step).
_SLOW_EVERY = 4
_RATE_SLOW = 0.002 * _SLOW_EVERY  # the slow statistics' rate per update, scoring (~500 readings)
_RATE_DNORM = 0.005 * _SLOW_EVERY  # ... and the normal first difference's (~200 readings) ...
_LONG_EVERY = 32  # ... which a long memory follows every this many updates (128 calm readings) ...
_RATE_LONG = 0.0005 * _SLOW_EVERY * _LONG_EVERY  # ... over ~2,000 readings, an acceptance's order (see _learn_long)
_Q_STEP = 0.001  # per reading
_M_STEP = 0.005  # per reading: ~200 exceedances (~10,000 readings) of memory for a tail's scale
_EXCESS_CLIP = 4.0  # one excess counts at most 4 x the tail's mean (a robust mean) ...
_EPISODE_CLIP = 20.0  # ... and an anomalous episode's first reading at most 20 x (when rare)
_EP_MEMORY = 2000.0  # readings over which the rate of anomalous episodes is measured ...
_ROUTINE = 300.0  # ... and one episode per this many readings or more is routine
# The spike tail's shape (see _learn_shape; docs/detectors.md, "A spike tail that learns its own
# shape", session 11): the share of its calm exceedances beyond _SHAPE_AT tracked median
# excesses, 2^-6 = 0.0156 for an exponential tail (independent samples of gaussian noise: 0.007;
# of Student-t with 3 degrees of freedom: 0.058), counted over ~_SHAPE_MEMORY exceedances
# (~200,000 readings at one a minute). A generalised Pareto tail of shape xi has
# (1 + _SHAPE_AT (2^xi - 1))^(-1/xi) of them: the shape used is the one at that share's lower
# bound (_SHAPE_Z standard errors), 0 (the exponential extrapolation, as before) until the
# evidence says the tail is heavier, and never before _SHAPE_MIN counted exceedances (~14,000
# readings). At 6 medians rather than 4 (1/16) a t(3) tail's share is 3.7 x the exponential's
# rather than 1.8 x: per exceedance 1.6 x the evidence, and 6 medians (~4 mean excesses) is
# still well within where calm learning stops (~7 mean excesses, 0.7 of the threshold).
_SHAPE_AT = 6.0
_SHAPE_MED = 0.005  # the median excess tracker's step per exceedance (x the tail's mean excess) ...
_SHAPE_SETTLE = 1.0 / _SHAPE_MED - 5.0  # ... after steps of 1 / (k + 5) over its first exceedances ...
_SHAPE_WARM = 30.0  # ... of which this many before the share beyond it is counted
_SHAPE_EVERY = 16.0  # the shape is re-estimated every this many exceedances
_LN2 = math.log(2.0)
_SHAPE_MEMORY = 2000.0
_SHAPE_MIN = 100.0
_SHAPE_KEEP = 1.0 - 1.0 / _SHAPE_MEMORY
_SHAPE_Z = 1.6
# The share's variance is more than a binomial count's: the median it is counted against is
# itself estimated from the same exceedances (a settled tracker's error, integrated over its
# memory, adds ~30 % to the binomial variance on an exponential tail), and the spike's
# standardised residual moves with the live scale and quantile. Taken as twice the binomial
# variance (the bound 2.3 binomial standard errors below the share): on 4 x 200,000 readings of
# Laplace noise and 3 x 200,000 of gaussian noise the shape stayed 0 throughout.
_SHAPE_DISPERSION = 2.0
_SHAPE_MAX = 0.5  # (a finite variance: past it a tail is not noise this detector can calibrate)
_SHAPE_TOL = 0.005  # the threshold's multiplier is recomputed when the shape moves this much
_SHAPE_STEP = 0.005  # (the table's grid)
_SHAPE_MID = 0.5 * _SHAPE_AT  # ... and the share past 6 medians among those past 3 (see _set_shape)
_SHAPE_THIN = ((1.0 + _SHAPE_AT * (2.0 ** _SHAPE_MAX - 1.0)) / (1.0 + _SHAPE_MID * (2.0 ** _SHAPE_MAX - 1.0))) ** (-1.0 / _SHAPE_MAX)
_SHAPE_P = tuple((1.0 + _SHAPE_AT * (2.0 ** (i * _SHAPE_STEP) - 1.0)) ** (-1.0 / (i * _SHAPE_STEP)) if i else 2.0 ** -_SHAPE_AT
                 for i in range(round(_SHAPE_MAX / _SHAPE_STEP) + 1))
# Per channel: (prior quantile, prior mean excess, floor of the threshold). The first five are
# standardised (divided by their own spread): the prior is |N(0, 1)|, and the floor, 4, is what
# independent gaussian noise reaches once in ~30,000 readings. Variance: EWMA(|dx|) / normal - 1,
# its prior measured on white gaussian noise through the channel itself (3 x 20 M readings: 98 %
# quantile 0.242, mean excess 0.048; consecutive |first differences| share a reading, so the
# independent-sample figures 0.19 / 0.04 were lighter than the channel's own null model and a
# young series' variance threshold sat at the floor, which white noise passes once in ~27,000).
_GAUSS = (2.33, 0.38, 4.0)
# Quiet: normal / max(d_low, one quantum) - 1 (see _step), its prior measured the same way
# (3 x 4 M readings: 98 % quantile 0.126, mean excess 0.062, 1e-6 quantile 0.58-0.64), its
# floor where white noise passes it as often as the upper side's floor (0.46-0.48: 4e-5 a reading).

# The burst count: readings whose spike score reaches _BURST_AT of its threshold, counted with a
# memory of ~_BURST_MEMORY readings. A loose connector's glitches, a hunting loop's swings: each
# reading alone is within the spike threshold (or passes it once), but their number is far beyond
# what the spike channel's own calibration allows. That calibration says how often: its tail is
# exponential from its 98 % quantile, so a reading reaches s of its threshold with probability
# (1 - TAIL_P) x (rate / (1 - TAIL_P)) ** s; the count raises at the smallest number whose Poisson
# probability over the memory is within ``rate`` (see _burst_limit).
_BURST_AT = 0.3
_BURST_MEMORY = 50.0
_BURST_KEEP = 1.0 - 1.0 / _BURST_MEMORY
# Where bursts are routine, the count's own calibrated tail raises its threshold above that floor
# (its prior: the count on white gaussian noise through the detector, 3 x 300,000 readings: 98 %
# quantile 0.68-0.71, mean excess counted in runs 0.25-0.28). The count stops at 1.5 x its
# threshold: past it, more is no more evidence of a fault, only a longer hold after its end
# (uncapped, an oscillation's alarm cleared a median 77 readings after it, 43 capped).
_BURST_CAP = 1.5
_BURST_TEST = 1e-3  # the window's test of the count's null (see _burst_null_holds)
# The count's evidence holds an alarm while it is that of an episode still going on (the end of
# _step), where the alarm's ten quiet readings are no evidence at all: glitches on 10 % of the
# readings leave gaps of ten or more between them a third of the time. It holds
# * from a glitch that follows earlier ones weighing at least one glitch (_BURST_EV - 1), their
#   weights decaying with the count. A glitch is a counted reading alone (the next is not counted):
#   a run of them is the predictor adopting a level (a step's edge, a ramp it lags, a return),
#   whose end is not the burst's. Three glitches just past _BURST_AT in ~50 readings are as rare
#   in normal operation (Poisson, 2.2e-5) as one reading at the alarm's hold level of the spike
#   threshold (0.7 of its way: 2.0e-5), so the hold rests on the same evidence as the alarm's own.
#   A glitch weighs what the spike tail says it is worth: one counted reading, and 1.44 more per
#   unit of spike score past the count's own level (_burst_weight: the log of its probability
#   against the log of a counted reading's; the level is _BURST_AT and half a quantum, so on a
#   quantised signal, whose moves the tail's model does not describe, it weighs less), to 2 at
#   the threshold, whose probability (``rate``) is that of two readings just past _BURST_AT. So a
#   reading that raised a spike alarm and one more glitch while it is raised hold it, as three
#   glitches just past _BURST_AT do; a lone spike holds nothing.
#   A glitch's weight beyond one counts only once it is seen alone for _REACQUIRE readings (the
#   predictor's own span for adopting a level: a step's return that the predictor lags passes
#   _BURST_AT on alternate readings), checked at the next counted reading (_BURST_ALONE);
# * while the count is beyond its own normal (its 98 % quantile) and the readings since its last
#   glitch are fewer than a gap the episode's own rate (its glitches over the memory) leaves with
#   probability _BURST_TEST: each counted reading sets the count's level at that gap,
#   count x KEEP^(ln _BURST_TEST / ln(1 - glitches / MEMORY)), and at most MEMORY readings
#   (_BURST_SPAN: the count knows nothing of the episode beyond its memory; uncapped, a hunting
#   oscillation, whose half-swings are runs and few glitches, held 85-110 readings past its end).
#   _BURST_GAP is ln KEEP x ln _BURST_TEST.
# Glitches on 10 % of the readings are let go ~35-60 readings after the last one.
# Before the hold starts, a spike alarm's own reading (past the spike threshold, alone)
# holds while one more glitch would still start it and the count is beyond its own normal: an
# intermittent fault's first glitch that passed the threshold, whose next glitch came after the
# alarm's ten quiet readings (a gap of ten or more a third of the time at one glitch in ten),
# cleared, and the next raised again: a raise/clear pair before the held alarm. A lone spike on
# white noise is then held until its count (1) decays to the count's normal (its 98 % quantile,
# 0.5-0.7: 18-32 readings), and its alarm clears ~30 readings after it instead of 10; where the count's normal
# is 1 or more (glitches routine) it holds nothing. Only a reading past the spike threshold: a
# glitch within it at the end of another channel's alarm (a stuck sensor's return, a step's) is
# no spike alarm's first glitch: holding on any lone glitch held 24 of the suite's seed-0
# sustained faults 1-62 readings longer (cleared median 19 -> 25).
_BURST_GAP = math.log(_BURST_KEEP) * math.log(_BURST_TEST)
_BURST_SPAN = _BURST_MEMORY * math.log(_BURST_KEEP)  # ... a gap of at most the count's memory: beyond it, it knows nothing of the episode
_BURST_EV = 2.0
_RAIL_KEEP, _RAIL_MEMORY = rail.KEEP, rail.MEMORY  # the rail count's (see rail.py)
_LAT_KEEP = lattice.KEEP  # the lattice count's (see lattice.py)


def _gap_after(dt: float) -> float:
    """A reading more than this many seconds after the one before follows a gap (the pipeline
    then calls score_after_gap): twice the series' interval, a reading missed; none untimed."""
    return 2.0 * dt if dt > 0.0 else math.inf


def _burst_limit(rate: float) -> float:
    """The burst count that raises: the smallest n whose Poisson probability of being reached,
    at the rate a calibrated spike channel passes _BURST_AT of its threshold over
    _BURST_MEMORY readings, is within ``rate`` (n = 4 at rate 1e-6)."""
    mu = _BURST_MEMORY * _burst_share(rate)
    return float(next((n for n in range(2, 100) if poisson_at_least(mu, n) <= rate), 100))


def _burst_share(rate: float) -> float:
    """The share of readings a calibrated spike channel puts past _BURST_AT of its threshold:
    its tail is exponential from its 98 % quantile to ``rate`` at the threshold."""
    return (1.0 - TAIL_P) * (rate / (1.0 - TAIL_P)) ** _BURST_AT


def _burst_weight(rate: float) -> float:
    """A glitch's evidence beyond one counted reading's, per unit of spike score past the
    count's level (see _BURST_EV): the spike tail puts a reading at s of the threshold with
    probability (1 - TAIL_P) x (rate / (1 - TAIL_P)) ** s, so its log grows by
    ln(rate / (1 - TAIL_P)) per unit of s, against ln(share at _BURST_AT) for one counted
    reading (1.44 at rate 1e-6)."""
    return math.log(rate / (1.0 - TAIL_P)) / math.log(_burst_share(rate))


def _shape_of(share: float) -> float:
    """The generalised Pareto shape (0 to _SHAPE_MAX) whose tail puts ``share`` of its
    exceedances beyond _SHAPE_AT median excesses (_SHAPE_P, interpolated): 0 at 1/16 or less."""
    if share <= _SHAPE_P[0]:
        return 0.0
    i = bisect.bisect_left(_SHAPE_P, share)
    if i >= len(_SHAPE_P):
        return _SHAPE_MAX
    lo, hi = _SHAPE_P[i - 1], _SHAPE_P[i]
    return (i - 1 + (share - lo) / (hi - lo)) * _SHAPE_STEP


def _clipped_mean(xi: float) -> float:
    """The mean excess a tail's tracker settles at (each excess clipped at _EXCESS_CLIP x it),
    in scales of a generalised Pareto tail of shape ``xi``: the fixed point of
    m = E min(Y, 4 m) (0.980 for an exponential tail, 1.30 for xi = 1/3, where the unclipped
    mean is 1.5)."""
    m = 1.0
    for _ in range(200):
        c = _EXCESS_CLIP * m
        m2 = -math.expm1(-c) if xi < 1e-9 else (1.0 - (1.0 + xi * c) ** (1.0 - 1.0 / xi)) / (1.0 - xi)
        if abs(m2 - m) < 1e-12:
            break
        m = m2
    return m


def _shape_gain(xi: float, k: float) -> float:
    """The spike threshold's distance from its quantile, in tracked mean excesses, for a tail
    of shape ``xi`` (k = ln(0.02 / rate), the exponential tail's): its scale, mean excess /
    _clipped_mean(xi), times (e^(k xi) - 1) / xi, relative to the exponential tail's (so at 0
    exactly k), never below k."""
    if xi <= 0.0:
        return k
    g = _clipped_mean(0.0) / _clipped_mean(xi) * math.expm1(k * xi) / xi
    return g if g > k else k


_BURST_PRIOR = (0.69, 0.27, _burst_limit(1e-6))
_PRIOR = (_GAUSS, _GAUSS, _GAUSS, _GAUSS, _GAUSS, (0.242, 0.048, 0.5), _GAUSS, _GAUSS, (0.126, 0.062, 0.47), _BURST_PRIOR, _GAUSS)
_FLOORS = tuple(p[2] for p in _PRIOR)
_DRIFT_SAMPLE = _LAMBDA_DRIFT / (2.0 - _LAMBDA_DRIFT)  # independent samples per reading of the drift average
_STUCK_MIN = 10  # a value repeated this often is "stuck" on a series that never repeats one
_STUCK_FACTOR = 3.0  # ... else this many times the longest repeat seen in normal readings
_RANGE_MARGIN = 0.2  # out of range: beyond the learned range by 20 % of its width ...
_RANGE_SPIKE = 0.9  # ... and 0.9 of the way to the spike threshold (5.75 noise scales on gaussian noise)
_SHADOW_MEMORY = 50  # readings: the shadow a rebaseline adopts is the episode's mean until then, then an EWMA over as many
_REACQUIRE = 3  # the short-term predictor jumps to a level held this many readings beyond its clip
_BURST_ALONE = _BURST_KEEP ** (_REACQUIRE + 0.5)  # the count's decay over more than _REACQUIRE readings (see _BURST_EV)
_RELEARN_AFTER = 10  # after an anomalous reading, learning resumes after this many calm ones
_PERIOD_S = 86400.0  # the seasonal profile: one day ...
_BINS = 96  # ... in 15-minute bins, linearly interpolated
_BINS_PER_S = _BINS / _PERIOD_S
_OMEGA_S = 2.0 * math.pi / _PERIOD_S  # the plain model's daily sinusoid, radians a second (see _step)
_PROFILE_DAYS = 3.0  # a bin's value remembers about this many days of visits
_SEASONAL_ON = 0.75  # the profile serves as the model of normal once its error is this x the plain one's
_SEASONAL_OFF = 0.9  # ... and stops when it is above this x
_EXPECTED = 3.0  # a reading within this many scales of the daily profile is expected there
_TRUST_DAYS = 2.0  # a bin of the profile serves once it has seen this many days ...
_TRUST_DEV = 2.0  # ... and the later days' deviation from it is within twice its first day's
# (plus a scale and the mean first-day deviation of all bins: a noise-free profile is not untrusted
# for rounding)
_SETTLED = 50  # updates of the profile's statistics before it may serve
_FLOATS = ("f_alpha", "f_beta", "f_level", "f_trend", "f_scale", "alpha", "beta", "level", "trend", "scale",
           "ds_level", "s_scale", "prof_sum", "prof_shift", "m_level", "m_drift", "m_level_s", "m_drift_s", "v_level", "v_drift", "v_level_s",
           "v_drift_s", "d_norm", "d_fast", "quantum", "prev", "lo", "hi", "shadow", "s_shadow", "dt", "err_plain", "err_seas",
           "ep_rate", "base_sum", "t_ref", "v_trend", "horizon", "m_short", "v_short", "f_jump", "m_slope", "v_slope", "g_slope", "r_slope", "t_slope", "n_fit", "d_quick", "d_low", "d_norm_m", "d_norm_l", "d_hold",
           "day_c", "day_s", "day_g", "burst", "b_hold", "b_last", "b_ev", "b_xe", "b_w", "b_gain", "b_ratio", "e_prev", "fp_prev", "e_prev2", "b_yscale",
           "rail_hi", "rail_lo", "rail_ch", "rail_cl", "rail_o", "rail_lim", "rail_in", "rail_p1", "rail_p2", "rail_th", "rail_tl",
           "lat_q", "lat_c", "lat_o", "lat_lim",
           "a_level", "a_x", "a_vk", "a_k", "a_rate", "a_se2", "a_c", "a_s", "a_inv", "f_rc", "f_rv", "f_ek",
           "sh_med", "sh_k", "sh_n", "sh_f", "sh_f3", "sh_xi")
_ADDED = {"jumps": 0, "coarse": 0, "hold_n": 0, "p_tick": 0, "ep_rate": 0.0, "base_sum": 0.0, "s_phase": 0, "t_ref": 0.0, "v_trend": 0.0, "horizon": 0.0,
          "m_short": 0.0, "v_short": 0.0, "f_jump": 0.0, "m_slope": 0.0, "v_slope": 0.0, "g_slope": 0.0, "r_slope": 0.0, "t_slope": 0.0, "n_fit": 0.0, "slope_from": 0,
          "d_quick": 0.0, "d_low": 0.0, "d_norm_m": 0.0, "d_norm_l": 0.0, "d_hold": 0.0, "l_n": 0, "day_c": 0.0, "day_s": 0.0, "day_g": 0.0, "burst": 0.0, "b_hold": 0.0, "b_last": 0.0, "b_ev": 0.0, "b_xe": 0.0, "b_w": 0.0, "b_run": 0, "burst_off": 0, "t_out": 0,
          "b_gain": 0.0, "b_ratio": 0.0, "e_prev": 0.0, "fp_prev": 0.0, "e_prev2": 0.0, "b_yscale": 0.0,
          "rail_hi": 0.0, "rail_lo": 0.0, "rail_ch": 0.0, "rail_cl": 0.0, "rail_o": 0.0, "rail_lim": 0.0, "rail_in": 0.0, "rail_p1": 0.0, "rail_p2": 0.0, "rail_th": -1e300, "rail_tl": 1e300, "rail_ah": 0, "rail_al": 0, "rail_ok": 0,
          "lat_q": 0.0, "lat_c": 0.0, "lat_o": 0.0, "lat_lim": 0.0,
          "a_level": 0.0, "a_x": 0.0, "a_vk": 0.0, "a_k": 0.0, "a_rate": 0.0, "a_se2": 0.0, "a_c": 0.0, "a_s": 0.0, "a_t": 0, "a_inv": 0.0, "a_next": 0,
          "f_rc": 0.0, "f_rv": 0.0, "f_ek": 0.0, "f_rn": 0, "lv_win": 0, "sh_med": 0.0, "sh_k": 0.0, "sh_n": 0.0, "sh_f": 0.0, "sh_f3": 0.0, "sh_xi": 0.0}  # state keys added since the first release, and their value in an older model
_MAYBE_NAN = ("first_ts", "last_ts")  # NaN until the first timestamped reading
_INTS = ("jumps", "coarse", "hold_n", "burst_off", "b_run", "p_tick", "run", "run_max", "shadow_n", "calm", "calm_level", "n", "f_out", "unseen", "s_n", "high_run", "last_n", "s_phase", "slope_from", "t_out", "a_t", "a_next", "rail_ah", "rail_al", "rail_ok", "f_rn", "l_n", "lv_win")


# The detector's state, one slot each (module-level, so that fit and the compiled class, which has
# no __slots__ attribute, read the same list).
_SLOTS = ("rate", "learn_below", "threshold", "_k", "_z_rate", "f_alpha", "f_beta", "f_level", "f_trend", "f_scale", "f_out",
          "alpha", "beta", "level", "trend", "scale", "ds_level", "s_scale", "prof", "seen", "dev", "base", "base_sum", "first_ts", "last_ts",
          "dt", "last_n", "err_plain", "err_seas", "seasonal", "m_level", "m_drift", "m_level_s", "m_drift_s", "v_level",
          "v_drift", "v_level_s", "v_drift_s", "d_norm", "d_fast", "quantum", "jumps", "coarse", "prev", "run", "run_max", "hold_n", "lo", "hi",
          "cal_q", "cal_m", "thr", "off", "ep_rate", "pending", "shadow", "s_shadow", "shadow_n", "calm", "calm_level", "n", "high_run", "unseen", "s_n", "prof_sum", "prof_shift", "_last", "_qfloor", "_q2", "_tnoise", "_sw_half",
          "_stuck_lim", "_w_min", "_a_ds", "_trust_n", "_day_n", "_trust_tol", "_clip_p", "_clip_s",
          "_prof_k", "p_tick", "_fsc", "_sc", "_ssc", "_kp", "_ks", "_var_cap", "_i_dn", "_i_stuck", "_o_sp", "_i_sp",
          "_o_v", "_i_v", "_up", "_us", "_lam_k", "_tick", "_xr", "s_phase", "t_ref", "v_trend", "horizon", "_vtx",
          "m_short", "v_short", "f_jump", "_ksh", "_i_sh", "m_slope", "v_slope", "_ksl", "_i_sl", "g_slope", "r_slope", "t_slope", "n_fit", "slope_from", "_ya", "_yb", "_yk",
          "d_quick", "d_low", "d_norm_m", "d_norm_l", "l_n", "d_hold", "_o_q", "_i_q", "day_c", "day_s", "day_g", "_day_y",
          "burst", "b_hold", "b_last", "b_ev", "b_xe", "b_w", "b_run", "burst_off", "_o_b", "_i_b", "_b_z", "_b_at", "_b_cap", "_b_k", "t_out",
          "b_gain", "b_ratio", "e_prev", "fp_prev", "e_prev2", "b_yscale", "_i_bk", "_o_bk", "_j_bk", "_zbk",
          "rail_hi", "rail_lo", "rail_ch", "rail_cl", "rail_ah", "rail_al", "rail_ok", "rail_o", "rail_lim", "rail_in", "rail_p1", "rail_p2", "rail_th", "rail_tl", "_rail_tol", "_i_rail", "_rail_cap", "_rail_n",
          "lat_q", "lat_c", "lat_o", "lat_lim", "_lat_tol", "_i_lat", "_lat_cap",
          "a_level", "a_x", "a_vk", "a_k", "a_rate", "a_se2", "a_c", "a_s", "a_t", "a_inv", "a_next",
          "f_rc", "f_rv", "f_ek", "f_rn", "_r_on", "states", "levels", "lv_win", "notice", "gap_s", "sh_med", "sh_k", "sh_n", "sh_f", "sh_f3", "sh_xi", "_g_sp")


class RobustDetector:
    """The agent's default: fault channels over a model of normal that faults cannot teach.

    Eleven channels are calibrated on the series' own score history (the order of ``SPIKE`` ..
    ``BACK`` below: spike, level and drift against the plain and the seasonal model, variance,
    short-term level, slope, the variance's quiet side, burst count, the spike judged from both
    sides); five are judged against bounds the series itself sets (stuck: a run of repeats
    against the longest normal run; range: beyond the learned range; rail: returns to the recent
    extreme against the window's own rate, see ``rail.py``; lattice: steps finer than the
    window's quantum, see ``lattice.py``; anchor: the level against where the fit left normal).

    Per series, two baselines:

    * a **short-term predictor** (Holt's linear smoothing, its rate chosen at fit as the
      steadiest that predicts the training window about as well as the best): what the next
      reading should be. It always learns, each residual clipped at 2.5 scales (Huber), so a
      spike barely moves it and a lasting step is followed within a few readings;
    * the **model of normal**: where the series belongs. Either plain (a level and trend,
      Brown's double smoothing, at most as fast as ``_SLOW``, plus a daily sinusoid where the
      training window showed one: ``robust_stats.daily_component``), or seasonal (a slow level plus a
      daily profile of 96 interpolated bins by time of day), whichever has predicted better
      recently once the profile has seen a whole day. It stops learning when a channel
      reaches its threshold and resumes after ``_RELEARN_AFTER`` readings below
      ``learn_below`` (the alarm's own hysteresis): a lasting fault stays a deviation from it,
      so its alarm stays raised while the fault lasts. While it stands still its expected
      value is a forecast, judged within a band that widens with the horizon by the trend's
      own variability in normal operation (a steady trend or a stationary level holds, a
      wandering trend lets go of an alarm that is only the forecast's drift).
      ``rebaseline()`` accepts a lasting change as the new normal.

    Also learned from normal readings only: the noise scale of each baseline (floored at half
    the smallest step the series has taken, so a quantised signal is not over-sensitive), the
    spread of each channel, the normal size of a first difference, the longest run of a
    repeated value, the value range.

    Channels, each divided by its own threshold (``score = max``, 1.0 = anomalous):

    * ``spike``: |reading - short-term prediction| / its scale; and, one reading late, the same
      reading judged from both sides (its residual less what the next reading says of where the
      level was, the window's least-squares interpolation gain), / its own scale, for a
      one-reading excursion that came back: a spike on a level that moves by its noise between
      readings;
    * ``level_shift``: the model-of-normal residual averaged over ~7 readings, / its spread;
    * ``drift``: the same over ~50 readings (and at least a whole noise scale): a steady move
      away from normal, faster than the series' own trends and wander;
    * ``variance``: EWMA of |first difference| (each clipped at 4x normal) / its normal - 1;
      and its quiet side, calibrated on its own tail: normal / the recent E|dx| - 1, the recent
      one falling over ~33 readings and rising at once to its ~7-reading average, not lowered
      by a repeated value (the stuck channel's), floored at one quantum (noise gone quiet);
    * ``stuck``: readings repeating one value / max(10, 3 x the longest normal run);
    * ``out_of_range``: beyond the learned range by 20 % of its width and 0.9 of the way to
      the spike threshold (a new extreme is suspicious at a smaller jump than a spike); the
      range takes in an episode's first reading as far as episodes are routine for the series;
    * the short-term level (explained as ``level_shift``): the short-term predictor's residual
      averaged over ~3 readings, / its spread, counting a jump away from normal the predictor
      adopted as it fades (held while it holds its own episode, ended by a jump back within it):
      an abrupt lasting shift on a curve the model of normal lags. Only where the predictor is
      faster than the model of normal.
    * the slope (explained as ``drift``): the predictor's moves averaged over ~50 readings,
      less a reference that follows a steadily changing slope (a curve's) without lag, / its
      spread: the onset of a ramp on a curve the model of normal lags. Only where the predictor
      is faster than the model of normal, and silent while the model of normal stands still.
    * the burst count (explained as ``spike``): readings past 0.3 of the spike threshold, counted
      over ~50 readings, raising at the count the spike channel's own calibration makes as rare
      as ``rate`` (4) or above, where its own tail says bursts are routine: glitches and swings
      each within the spike threshold (a loose connector, a hunting loop). Off where the training
      window shows that calibration does not describe how often the series gets there. From
      the third glitch (a counted reading alone), or the second after one past the spike
      threshold (each weighs its own improbability, see _BURST_EV), it holds an alarm until the
      gap since the last is one the episode's own rate makes unlikely (see _BURST_GAP): ten quiet
      readings are no evidence that glitches one reading in ten have ended.
    * the rail count (explained as ``stuck``): per side, readings returning to the recent
      extreme, in a row or not, over ~50 readings, raising at the count a Poisson null at the
      window's own return rate makes as rare as ``rate``: a transmitter railed at a range limit
      the process hovers at (see rail.py). Off on coarsely quantised signals.
    * the lattice count (explained as ``variance``, where no other channel reaches its threshold):
      steps under 0.4 of the quantum the training window showed, over ~50 readings, raising at the
      count the rail count's null gives a window without one: a value no longer the quantised
      transmitter's own (a filter switched in downstream, an overridden value: a quiet period
      whose steps are finer than the quantum, which repeats as often as before). On only where
      the window's steps are all whole quanta (see lattice.py).
    * the anchor (explained as ``drift``): the live level (~7 readings) against where the fit left
      normal, which nothing scored moves (only ``rebaseline``, the acceptance time or a fit),
      within what the window's variogram says normal's own diffusion can reach in the readings
      since (``robust_stats.anchor_reach``): a ramp slower than the statistics learn. Off where
      the window's variogram is convex (a curve the bound cannot extrapolate).

    Thresholds are calibrated on the series' own history of each channel: a quantile tracker
    at 98 % plus the mean excess above it, extrapolated as an exponential tail to ``rate``
    per reading, floored at what independent gaussian noise reaches once in ~30,000 readings.
    The tails learn from calm readings and from the first reading of each anomalous episode
    (so a series whose spikes are routine stops alarming on them after a dozen or so, while a
    few identical spikes each raise their own alarm), never from the rest of an episode.
    Work and memory per reading are O(1).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> d = RobustDetector()
    >>> stats = d.fit(20.0 + rng.normal(0, 1, 500))
    >>> d.score_one(20.5) < d.threshold
    True
    >>> d.score_one(35.0) >= d.threshold
    True
    >>> d.explain(35.0).kind
    'spike'
    """

    name: ClassVar[str] = "robust"
    streaming: ClassVar[bool] = True
    # The parameters of __init__, as params.py checks them: a class compiled by mypyc has no
    # signature inspect can read (tests/test_robust_native.py checks the two agree).
    init_params: ClassVar[tuple[tuple[str, float], ...]] = (("rate", 1e-6), ("learn_below", 0.7), ("threshold", 1.0))
    __slots__ = _SLOTS


    def __init__(self, rate: float = 1e-6, learn_below: float = 0.7, threshold: float = 1.0) -> None:
        """``rate``: the per-reading probability at which each channel's calibrated tail puts
        its threshold (the nuisance budget); ``learn_below``: readings scoring below this (of a
        channel's threshold) are normal enough to learn from after an anomaly; ``threshold``:
        the alarm decision, ``score >= threshold``, on scores where 1.0 is a channel at its
        calibrated threshold (raise it to alarm only on larger deviations)."""
        for pname, value, ok in (
            ("rate", rate, 0.0 < rate < 0.01),
            ("learn_below", learn_below, 0.0 < learn_below <= 1.0),
            ("threshold", threshold, threshold > 0),
        ):
            if not (ok and math.isfinite(value)):
                raise ValueError(f"{pname}={value!r} is out of range")
        self.rate = float(rate)
        self.learn_below = float(learn_below)
        self.threshold = float(threshold)
        self._k = math.log((1.0 - TAIL_P) / self.rate)
        self._z_rate = 2.0 * math.log(1.0 / self.rate)  # the anchor's bound's per-reading quantile, squared (see _anchor_bound)
        self._b_k = _burst_weight(self.rate)
        # short-term predictor
        self.f_alpha, self.f_beta = 0.03, 0.0
        self.f_level = self.f_trend = 0.0
        self.f_scale = 1.0
        # The predictor's one-step errors, paired with the one before (see _rechoose_rate): their
        # sum of products, of squares, the number of pairs, and the error kept at the cycle's
        # phase 1 for the pair phase 2 makes; on (_r_on) for a slow level-only predictor.
        self.f_rc = self.f_rv = self.f_ek = 0.0
        self.f_rn = 0
        self._r_on = False
        self.f_out = 0  # consecutive readings beyond the predictor's clip (+ above, - below)
        # the spike judged from both sides (see _step): the next reading's gain and the scale's
        # ratio to the predictor's (0: off), the last reading's residual and the forecast for this one
        self.b_gain = self.b_ratio = 0.0
        self.e_prev = self.fp_prev = self.e_prev2 = 0.0  # (e_prev2: the residual before e_prev)
        self.b_yscale = 0.0  # mean |next reading - forecast from before the last| / mean |residual|, at fit
        self._i_bk = 0.0  # 1 / its scale in value units, 0 while off
        self._o_bk, self._j_bk = 1.0, 1.0  # its normal and 1 / (threshold - normal), standard units
        self._zbk = 0.0  # its standardised value on the last reading (for its tail)
        # the short-term level: EWMA of the predictor's residuals, their mean |value| on normal
        # readings, and the jumps the predictor adopted (see _step), fading at its own rate
        self.m_short = self.v_short = self.f_jump = 0.0
        self._ksh = (0.0, 1.0, 4.0)  # its (normal, 1 / (threshold - normal), clip) in value units ...
        self._i_sh = 1.0  # ... and its second, on its own: 0 while the channel is off (_step tests it first)
        # the slope (see _slope_constants): the predictor's moves averaged over ~50 readings
        # (g_slope), its reference's level and trend (r_slope, t_slope), the channel's value (g
        # less the reference's prediction) and its mean |value| on normal readings ...
        self.m_slope = self.v_slope = 0.0
        self.g_slope = self.r_slope = self.t_slope = 0.0
        # ... and its (normal, 1 / (threshold - normal)) in value units per reading
        self._ksl = (0.0, 0.0)
        self._i_sl = 0.0  # (its second, on its own, as _i_sh)
        self.slope_from = 0  # ... silent until n reaches this (see _step, the predictor's jump)
        # plain model of normal
        self.alpha, self.beta = 0.01, 0.0
        self.level = self.trend = 0.0
        self.scale = 1.0
        # the trend's own variability over the model's memory: its mean |trend - its average over
        # ~1 / alpha readings| (t_ref), learned on normal readings (see _step, the frozen model)
        self.t_ref = self.v_trend = 0.0
        self._vtx = 0.0  # v_trend beyond what the trend estimate's own noise gives (see _refresh_plain)
        self.horizon = 0.0  # how far ahead the model of normal's expected value is a forecast (see _step)
        # ... and its daily sinusoid (see _step): coefficients at the time of day's cos and sin,
        # and their learning rate (0: none, the model is the level and trend alone)
        self.day_c = self.day_s = self.day_g = 0.0
        self._day_y = 0.0  # its value at the last reading scored (not state: for rebaseline)
        # seasonal model of normal: a deseasonalised level plus a daily profile
        self.ds_level = 0.0
        self.s_scale = 1.0
        # array, not list: 768 bytes each per series instead of ~3 kB (the per-series memory budget)
        self.prof = array("d", bytes(8 * _BINS))
        self.seen = array("q", bytes(8 * _BINS))
        # each bin's mean |reading - bin| over its first day of visits, and over the later ones
        self.base = array("d", bytes(8 * _BINS))
        self.dev = array("d", bytes(8 * _BINS))
        self.base_sum = 0.0  # the sum of base, kept as it learns
        self.first_ts = math.nan  # the first reading the profile learned from
        self.last_ts = math.nan
        self.last_n = 0  # self.n at last_ts
        self.dt = 0.0  # typical interval between readings (s)
        self.gap_s = math.inf  # a longer silence is a gap (see _gap_after, score_after_gap)
        self.err_plain = self.err_seas = 0.0  # the two models' recent mean absolute errors
        self.seasonal = False  # which model of normal the level and drift channels use
        self.unseen = _BINS  # bins of the profile not visited yet
        self.s_n = 0  # updates of the profile's statistics since it could serve (0: not yet)
        self.prof_sum = 0.0  # sum of the bins as stored
        self.prof_shift = 0.0  # subtracted from every bin where it is read (the re-centring)
        # channel state
        self.m_level = self.m_drift = self.m_level_s = self.m_drift_s = 0.0
        self.v_level = self.v_drift = self.v_level_s = self.v_drift_s = 0.0  # their mean |value| on normal readings
        self.d_norm = self.d_fast = 1.0  # normal and recent E|dx| (clipped)
        self.d_quick = self.d_low = 1.0  # ... over the last ~7 readings, and the quiet side's (see _step)
        self.d_norm_m = self.d_norm_l = 1.0  # the normal E|dx| as learned (~200 readings) and its long memory (~2,000) ...
        self.d_hold = 0.0  # ... which holds d_norm up as a fall in the noise is learned (see _learn_long)
        self.l_n = 0  # slow updates since the long memory last followed
        self.burst = 0.0  # the burst count (see _BURST_AT)
        self.b_hold = 0.0  # the count at which the gap since its last counted reading ends its hold (see _BURST_GAP)
        self.b_last = self.b_ev = 0.0  # the count and its glitches, as its last counted reading left them
        self.b_xe = 0.0  # ... what the glitches weigh beyond one each (see _BURST_EV)
        self.b_w = 0.0  # ... what the last glitch weighs beyond one, until it is seen alone
        self.b_run = 0  # 1: the last counted reading is alone so far, 2: it continues a run
        self.burst_off = 0  # 1: the count has no null on this series (see _burst_null_holds)
        # The rail count (see rail.py): per side, the recent extreme, readings since it was last
        # returned to, and the returns counted over ~rail.MEMORY readings; its normal and the
        # count that raises (0: off, a model stored before it), from the fit's window.
        self.rail_hi = self.rail_lo = self.rail_ch = self.rail_cl = self.rail_o = self.rail_lim = 0.0
        self.rail_ah = self.rail_al = 0
        self.rail_in = self.rail_p1 = self.rail_p2 = 0.0  # repeats away from the extremes, and the last two readings
        self.rail_ok = 0  # 1: the current run of repeats began as a return to an extreme
        # per side, the highest (lowest) reading since the extreme was set or last returned to, or
        # since the last repeat away from the extremes, less (plus) the tolerance; none: -1e300
        # (1e300). A return to it makes it the extreme (see _step: a rail's value)
        self.rail_th, self.rail_tl = -1e300, 1e300
        self._rail_tol = 0.0
        self._i_rail = 0.0
        self._rail_cap = 1e300
        self._rail_n = [0, 0]  # returns to each side's extreme in the fit's pass
        # The lattice count (see lattice.py): the window's quantum where its steps show a lattice
        # (0: off), steps finer than it counted over ~lattice.MEMORY readings, its normal and limit.
        self.lat_q = self.lat_c = self.lat_o = self.lat_lim = 0.0
        self._lat_tol = self._i_lat = 0.0
        self._lat_cap = 1e300
        self.quantum = 0.0  # the signal's resolution: its smallest nonzero |step|, or see resolution
        self.jumps = 0  # 1: the signal holds a value and jumps (see resolution)
        self.coarse = 0  # 1: the fit window shows its quantum coarser than its noise (robust_stats.coarse_lattice), and it does not hold and jump
        self.prev = 0.0
        self.run = self.run_max = 0
        self.hold_n = 0  # on a coarse lattice, the fit's longest stretch within one quantum (see _limits)
        self.lo = self.hi = 0.0
        self.cal_q = [p[0] for p in _PRIOR]
        self.cal_m = [p[1] for p in _PRIOR]
        self.thr = [0.0] * _N_CAL
        self.off = [0.0] * _N_CAL  # each channel's normal (see _set_threshold)
        self.ep_rate = 0.0  # anomalous episodes per reading, over ~_EP_MEMORY readings
        self.pending: list[float] | None = None  # an episode's first reading, for the tails (see _learn_episode)
        # the spike tail's shape (see _learn_shape): its median excess, its calm exceedances and
        # those beyond _SHAPE_AT median excesses (counted over ~_SHAPE_MEMORY), the shape used
        # (0: exponential) and the threshold's multiplier it gives (0: the exponential's, _k)
        self.sh_med = self.sh_k = self.sh_n = self.sh_f = self.sh_f3 = self.sh_xi = 0.0
        self._g_sp = 0.0
        # where the readings went while the model of normal stood still (raw, and less the profile)
        self.shadow = self.s_shadow = 0.0
        self.shadow_n = 0
        self.calm = _RELEARN_AFTER  # consecutive readings with every channel below learn_below
        self.calm_level = _RELEARN_AFTER  # ... with every channel but drift below it
        self.n = 0  # readings learned from since fit
        self.n_fit = 0.0  # readings the fit learned from (0: scoring has no young allowance, an older model)
        self._ya = 1.0  # the young drift threshold's allowance, refreshed in the scales' phase (see _refresh_plain) ...
        self._yb = self._yk = 0.0  # ... from b² - 1 (young_bound), recomputed once the samples grew past _yk
        self._xr = [0] * _N_CAL  # per channel: tail updates in a row above its quantile
        self.high_run = 0  # consecutive readings at or above learn_below, or drifting beyond the drift's normal
        self.t_out = 0  # consecutive readings learned with the level channel beyond its normal (the trend's gate)
        # the anchor (see _anchor_bound): where the fit left normal (its level, and the daily
        # sinusoid's coefficients at fit), moved only by rebaseline or a fit; the live level it
        # judges (an EWMA of the readings less that sinusoid, ~7 readings); what the window says
        # that level may reach (robust_stats.anchor_reach; a_vk 0: off); readings since the anchor
        self.a_level = self.a_x = self.a_c = self.a_s = 0.0
        self.a_vk = self.a_k = self.a_rate = self.a_se2 = 0.0
        self.a_t = 0
        self.a_inv = 0.0  # 1 / the bound in value units (0: off), refreshed when a_t reaches a_next
        self.a_next = 0
        self._last: tuple[Any, ...] = (0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        self._qfloor = _ABS_FLOOR
        self._q2 = 2.0 * _ABS_FLOOR
        self._stuck_lim = float(_STUCK_MIN)
        self._w_min = 0.0  # the profile's slowest learning rate per visit, from the reading interval
        self._a_ds = 0.01  # the rate of the level under the profile
        self._trust_n = 0  # visits a bin needs to serve: _TRUST_DAYS of them, from the reading interval
        self._day_n = 0  # ... and visits in one day
        self._trust_tol = 0.0  # s_scale + the mean of base (see _TRUST_DEV), refreshed in the slow phase
        # What the per-reading path scores with, cached: it changes only in the slow phases
        # (_refresh_plain, _refresh_seasonal, _set_threshold).
        self._clip_p = self._clip_s = 1e300
        self._fsc = self._sc = self._ssc = 1.0
        self._kp = self._ks = (0.0, 1.0, 0.0, 1.0)
        self._var_cap, self._i_dn, self._i_stuck = 4.0, 1.0, 0.0
        self._o_sp = self._i_sp = self._o_v = self._i_v = self._o_q = self._i_q = self._o_b = self._i_b = self._b_z = self._b_at = 1.0
        self._b_cap = 1e300
        self._up = self._us = (1.0, 1.0, 0.0, 4.0)  # per model: (u_l, u_d, drift floor, clip floor), see _constants
        self._lam_k = (_LAMBDA_LEVEL, _LAMBDA_DRIFT)  # the seasonal channels' rates per background tick
        self._tick: tuple[float, float, float, int] | None = None  # the latest background tick, for the slow phase
        self._prof_k = 1  # the profile learns from one calm reading in this many, at this weight ...
        self.p_tick = 0  # ... counted here
        self.s_phase = 0  # the part of the slow cycle the last calm reading learned (see _step)
        self.states: tuple[float, ...] = ()  # a status or mode signal's values (see robust_states.py)
        # Operating levels accepted as normal by a rebaseline, most recently used first (see
        # _remember_level): a reading at one of them moves the model of normal there.
        self.levels: list[float] = []
        self.lv_win = 0  # 1: the training window held them (see fit); moves are then read off the level channel too
        self.notice: str | None = None  # for the operator, not an alarm (base.py); the pipeline takes it
        self._rate_constants()
        self._update_thresholds()

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, values: np.ndarray, ts: np.ndarray | None = None) -> dict[str, Any]:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1 or v.shape[0] < 10 or not np.isfinite(v).all():
            raise ValueError("fit needs at least 10 finite values")
        if v.min() == v.max():
            # One value throughout (a machine idle while the agent started): no noise, no move and
            # no state to learn from, and a model fitted on it scored every later move as a
            # 1e12-scale spike, never learned from, for good.
            raise base.NothingToLearn(f"the training window holds one value ({v[0]:.6g}) throughout")
        fresh = type(self)(self.rate, self.learn_below, self.threshold)
        for k in _SLOTS:
            setattr(self, k, getattr(fresh, k))
        held = self._window_levels(v)
        if held:
            return self._fit_on_levels(v, ts, held)
        d = np.abs(np.diff(v))
        self.quantum, self.jumps = resolution(d)
        # (a signal that holds a value and jumps has its own resolution rules, ``jumps``: its flips
        # between two values resolve a mean finer than half a quantum, so it is not called coarse)
        self.coarse = 0 if self.jumps else coarse_lattice(d, self.quantum)
        self._limits()
        self.f_alpha, self.f_beta = choose_smoothing(v)
        self.alpha = min(self.f_alpha, _SLOW)
        self._rate_constants()
        self.beta = self.alpha * self.alpha / 4.0  # Brown: a trend as steady as the level
        start = float(np.median(v[:20]))
        self.f_level = self.level = self.ds_level = start
        # The noise: the MAD of the first differences, or their (trimmed) mean when more than
        # half of them are zero or tiny (a signal that holds a value and jumps a quantum at a
        # time, where the MAD says ~0 and would make every jump a 200-sigma spike).
        trimmed = d[d <= np.quantile(d, 0.98)] if d.size else d
        noise = max(mad_scale(np.diff(v)) / math.sqrt(2.0), float(np.mean(trimmed)) / 1.128 if trimmed.size else 0.0, self._floor())
        self.f_scale = self.scale = self.s_scale = noise
        # The model of normal starts where the window says the series was at its first reading,
        # with the trend it had there: else the pass below learns its own start-up as noise.
        day = None
        if ts is not None and self.quantum < 0.5 * noise:
            # (a signal resolved no finer than half its noise shows, in its first differences, its
            # quantisation rather than its noise: judged against that, a quantised wander's window
            # passed for a daily shape, see robust_stats.DAY_FIT)
            t_fit = np.asarray(ts, dtype=np.float64)
            day = daily_component(v, t_fit, noise, _PERIOD_S)
        if day is not None:
            self.day_c, self.day_s = day
            # One day's memory (twice the per-coefficient rate: a coefficient learns at half the
            # rate, the mean of cos² being one half), never faster than the level's.
            per_day = _PERIOD_S / max(float(np.median(np.diff(t_fit))), 1e-9)
            self.day_g = min(2.0 / per_day, self.alpha)
            ph = (t_fit % _PERIOD_S) * _OMEGA_S
            vb = v - (self.day_c * np.cos(ph) + self.day_s * np.sin(ph))
        else:
            vb = v
        self.level, self.trend = backcast(vb, self.alpha, self.beta, _CLIP * noise)
        self.t_ref = self.trend
        self.v_level = self.v_level_s = noise * _SD_LEVEL / 1.2533
        self.v_drift = self.v_drift_s = noise * _SD_DRIFT / 1.2533
        self.v_short = noise * _SD_SHORT / 1.2533
        self.v_slope = _slope_white(self.f_alpha) * noise
        self.d_norm = self.d_norm_m = self.d_fast = self.d_quick = self.d_low = max(float(np.mean(d)), self._floor())
        self.prev = float(v[0])
        self.rail_hi = self.rail_lo = float(v[0])
        self.rail_th, self.rail_tl = -1e300, 1e300
        self.lo, self.hi = float(np.min(v)), float(np.max(v))
        self.run_max = longest_run(v)
        # On a lattice coarser than the noise a value is held as long as the level stays within
        # its quantum, which the fit's runs show only where the level crossed quanta within the
        # window: the longest stretch the readings stayed within one quantum (two neighbouring
        # values) is how long the level was seen to stay put.
        self.hold_n = longest_within(v, self.quantum) if self.coarse else 0
        self._limits()
        self._refresh_plain()
        self._refresh_seasonal()
        times: list[Any] = [None] * v.shape[0]
        if ts is not None:
            t = np.asarray(ts, dtype=np.float64)
            if t.shape == v.shape and np.isfinite(t).all():
                times = t.tolist()
        # One pass learning from every reading (the profile too, when the timestamps are
        # known), collecting each channel's values once the baselines have settled.
        collected: list[list[float]] = [[] for _ in range(_N_CAL + 3)]  # (+ the predictor's residuals, forecasts and scales)
        warm = min(100, v.shape[0] // 4)
        step = self._step
        for i, x in enumerate(v.tolist()):
            step(x, times[i], True, collected if i >= warm else None)
        scale, s_scale = max(self.scale, self._floor()), max(self.s_scale, self._floor())
        spreads = (1.0, max(self.v_level, _V_LEVEL_MIN * scale), max(self.v_drift, _V_DRIFT_MIN * scale),
                   max(self.v_level_s, _V_LEVEL_MIN * s_scale), max(self.v_drift_s, _V_DRIFT_MIN * s_scale), 1.0,
                   max(self.v_short, _V_SHORT_MIN * max(self.f_scale, self._floor())),
                   self._slope_unit() / 1.2533, 1.0, 1.0, 1.0)
        # The spike judged from both sides: how much the next reading says of where the series
        # was, from the window's pairs (residual at t, next reading less its forecast from t - 1);
        # its values, for its tail, are the window's own residuals judged so.
        e_w, fp_w, fs_w = (np.asarray(a) for a in collected[_N_CAL:])
        y_w = v[warm + 1:] - fp_w[:-1]
        clip_w = _CLIP * max(self.f_scale, self._floor())
        self.b_gain, self.b_ratio = interpolation_gain(e_w[:-1], y_w, clip_w)
        if self.b_gain > 0.0:  # (how far a next reading strays from that forecast, in the predictor's scales)
            m_e = float(np.mean(np.minimum(np.abs(e_w[:-1]), clip_w)))
            self.b_yscale = float(np.mean(np.minimum(np.abs(y_w), clip_w))) / m_e if m_e > 0.0 else 1.0
            # (the window's last two readings, as scoring would have stored them)
            self.e_prev, self.fp_prev, self.e_prev2 = float(e_w[-1]), float(fp_w[-1]), float(e_w[-2])
        for c in range(_N_CAL):
            z = np.asarray(collected[c])
            if c != SPIKE and c != VAR and c != QUIET and c != BURST and c != BACK:  # the smoothed channels, standardised by the spread just learned
                z = z / max(1.2533 * spreads[c], 1e-300)
            # The smoothed level and drift channels' exceedances come in runs (an average over ~7
            # or ~50 readings, collected on every reading here): a run is one excursion's evidence.
            if c == BACK and self.b_gain > 0.0:  # (every reading's value, as its tail learns in scoring)
                z = np.abs(e_w[:-1] - self.b_gain * y_w) / np.maximum(self.b_ratio * fs_w[:-1], self._floor())
            self.cal_q[c], self.cal_m[c] = calibrate(z, *_PRIOR[c][:2], c in _IN_RUNS, c == SPIKE or c == BACK)
        self.slope_from = max(0, self.slope_from - self.n)  # (counted from the fit's end, as n is)
        self.n = self.s_phase = 0
        self.b_run = 0
        self.burst = self.b_hold = self.b_last = self.b_ev = self.b_xe = self.b_w = 0.0  # counted against the thresholds just calibrated, from here
        self.n_fit = float(v.shape[0])
        self.sh_med = self.sh_k = self.sh_n = self.sh_f = self.sh_f3 = self.sh_xi = self._g_sp = 0.0  # (the shape starts exponential: a window has ~10 exceedances)
        self._update_thresholds()
        self.d_norm_m = self.d_norm_l = self.d_norm  # (the long memory starts where the window left the learned one)
        self._set_hold()
        self.l_n = 0
        self.burst_off = 0 if self._burst_null_holds(collected[SPIKE]) else 1
        if not self.jumps and self.quantum < rail.RESOLVED * noise:
            self.rail_o, self.rail_lim = rail.rail_null(max(self._rail_n), v.shape[0], self.rate)
        self.rail_ch = self.rail_cl = 0.0  # counted against the null just set, from here
        if not self.jumps and lattice.shows_lattice(d, self.quantum):
            # (the window has no step under its quantum, by construction: its rate is under one
            # in the window's length, the rail count's null for a window without a hit)
            self.lat_q = self.quantum
            self.lat_o, self.lat_lim = rail.rail_null(0, v.shape[0], self.rate)
        self.run_max = max(self.run_max, self.run)
        self._limits()
        self._refresh_plain()
        self._refresh_seasonal()
        self._set_anchor(vb, day is not None and float(t_fit[-1] - t_fit[0]) < _PERIOD_S)
        self._r_on = self.f_alpha <= _SLOW and not self.f_beta
        self.gap_s = _gap_after(self.dt)
        # A status or mode signal scores as one (robust_states.py)
        self._set_states(discrete_states(v))
        return {
            "level": self.level, "trend": self.trend, "scale": self.scale, "alpha": self.alpha,
            "predictor_alpha": self.f_alpha, "predictor_trend": self.f_beta > 0, "predictor_scale": self.f_scale,
            "quantum": self.quantum, "run_max": self.run_max, "min": self.lo, "max": self.hi, "seasonal": self.seasonal, "states": list(self.states),
            "levels": list(self.levels), "thresholds": dict(zip(("spike", "level", "drift", "level_seasonal", "drift_seasonal", "variance", "short_level", "slope", "quiet", "burst",
                                    "spike_both_sides"), self.thr, strict=True)),
        }

    @staticmethod
    def _window_levels(v: np.ndarray) -> list[float]:
        """The setpoints a training window held (robust_stats.operating_levels, the band at the
        channels' 4-scale floor of the window's noise: the MAD of its first differences, which
        its few moves do not reach), or [] (also for a status signal, robust_states.py's)."""

        if v.shape[0] < 100 or discrete_states(v):
            return []
        noise = mad_scale(np.diff(v)) / math.sqrt(2.0)
        return operating_levels(v, _GAUSS[2] * noise) if noise > 0.0 else []

    def _fit_on_levels(self, v: np.ndarray, ts: np.ndarray | None, held: list[float]) -> dict[str, Any]:
        """Fit a window that held a few setpoints as the noise about them: each reading less
        its nearest setpoint, at the last one's. Fitted as it came, the window's moves were its
        noise: the spike tail learned jumps of their size as routine and the level channel's
        tail the lag after each, so moves between the setpoints raised (at the level channel,
        a few readings on) while a new level just beyond them passed unseen (90 over 30 / 45 /
        60: raised, then let go in 12 readings as the model learned it). Fitted on the noise,
        the channels see a move as one; the setpoints, kept as operating levels, make the
        moves between them normal (see _to_operating_level), and the learned range is the
        window's whole span."""
        lv = np.asarray(held)
        near = np.abs(v[:, None] - lv[None, :]).argmin(axis=1)
        out = self.fit(v - lv[near] + lv[near[-1]], ts)
        self.levels = [held[int(near[-1])], *(m for i, m in enumerate(held) if i != int(near[-1]))][:_LEVELS]
        self.lv_win = 1
        self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))
        out.update({"min": self.lo, "max": self.hi, "levels": list(self.levels)})
        return out

    def _set_anchor(self, vb: np.ndarray, part_day: bool) -> None:
        """The anchor, from the training window less its daily sinusoid (see _anchor_bound)."""
        # (off where the fit found a daily sinusoid in less than a day: its coefficients and the
        # window's slope then share what the window showed, and each alone extrapolates nothing)
        reach = None if part_day else anchor_reach(vb)
        self.a_t = self.a_next = 0
        self.a_inv = 0.0
        if reach is None:
            self.a_vk = 0.0
            return
        self.a_vk, self.a_k, self.a_rate, self.a_se2 = reach
        self.a_c, self.a_s = self.day_c, self.day_s
        ax = float(vb[0])
        for x in vb.tolist():
            ax += _LAMBDA_LEVEL * (x - ax)
        self.a_x = self.a_level = ax
        self._anchor_bound()

    def _anchor_bound(self) -> None:
        """The anchor channel's bound at a_t readings from the anchor: how far the live level may
        be from the anchor's forecast in normal operation, z x sqrt(the variance anchor_reach
        bounds), z an iterated-logarithm boundary: the per-reading rate's gaussian quantile
        (2 ln(1 / rate)) plus 2 ln(1 + ln(1 + t / k)) for the looks taken at a deviation that,
        growing ~ sqrt(t), is new only once per doubling of t."""
        t = self.a_t
        # (every 16 readings, then every t / 64 of them: the bound then moves by under 2 % between
        # refreshes, and its cost leaves the readings that make scoring's p99)
        self.a_next = t + (16 if t < 1024 else t >> 6)
        if self.a_vk <= 0.0:
            self.a_inv = 0.0
            return
        # (the per-reading quantile cached, and max() written as comparisons, with its order:
        # this reading can be one of a slow cycle's parts, the p99 of scoring)
        k = self.a_k
        w = t - k
        var = self.a_vk + self.a_rate * (w if w > 0.0 else 0.0) + self.a_se2 * t * t
        z2 = self._z_rate + 2.0 * math.log(1.0 + math.log(1.0 + t / k))
        r = math.sqrt(z2 * var)
        if r < 1e-12:
            r = 1e-12
        self.a_inv = 1.0 / r

    def _burst_null_holds(self, z: list[float]) -> bool:
        """Whether the burst count has a null on this series: the training window's readings past
        _BURST_AT of the spike threshold just calibrated (by more than half a quantum) are as
        rare as the spike tail's exponential model says (not beyond its 0.1 % Poisson upper
        tail). Where they are routine, the count's Poisson null does not hold and it is off: a
        jittered flow meter's whole-unit jumps (16 % of its readings at 0.38 of its fitted
        threshold) counted as a burst, and its return to a level between two units, where it
        jumps three times as often, held its alarm to the end of the recording. A signal that
        holds a value and jumps (see resolution) has no such null either: how often it jumps
        depends on where its level sits between two quanta, not on its noise."""
        if self.jumps:
            return False
        at = self._b_z + self._qfloor / max(self.f_scale, self._floor())  # (the spike threshold just set)
        hits = sum(1 for v in z if v >= at)
        return hits == 0 or poisson_at_least(len(z) * _burst_share(self.rate), hits) >= _BURST_TEST

    def _floor(self) -> float:
        # Half the smallest step: a quantised signal cannot show noise finer than its quantum.
        # Tiny absolute and relative floors keep a dead-flat signal's scores finite without
        # hiding any real change.
        return max(self._qfloor, 1e-9 * abs(self.level))

    def _set_rates(self) -> None:
        """The profile's rates, from the reading interval: each bin forgets over ~_PROFILE_DAYS
        of its visits, and the level under it moves as slowly (else the two chase each other:
        a level that follows the day's shape teaches the bins a wiggle, and back)."""
        if self.dt > 0.0:
            self._w_min = 1.0 / (_PROFILE_DAYS * (_PERIOD_S / _BINS) / self.dt + 1.0)
            a = self.dt / (_PROFILE_DAYS * _PERIOD_S)
            self._a_ds = a if a < self.alpha else self.alpha
            self._day_n = int((_PERIOD_S / _BINS) / self.dt) or 1
            # A bin's visits in a day are consecutive: it learns from one in _prof_k of them
            # (at least 4 a pass), each weighing _prof_k: at one reading a second the profile costs
            # a reading 1/225 of its work instead of all of it, at one a minute a third. While the
            # profile does not serve, its channels follow on those readings only (see _step).
            k = self._prof_k = self._day_n // 4 or 1
            self._lam_k = (1.0 - (1.0 - _LAMBDA_LEVEL) ** k, 1.0 - (1.0 - _LAMBDA_DRIFT) ** k)
            self._trust_n = int(_TRUST_DAYS * self._day_n)

    def _rate_constants(self) -> None:
        """Cache what changes only with the two models' rates (``alpha``, ``f_alpha``: set at fit,
        ``f_alpha`` re-chosen in _rechoose_rate): the trend estimate's own noise per noise scale
        (see _refresh_plain) and half the slope's mean |value| on white noise (see _slope_unit)."""
        self._tnoise = _TREND_NOISE * self.alpha ** 1.5
        self._sw_half = 0.5 * _slope_white(self.f_alpha)

    def _limits(self) -> None:
        """Cache what changes only with the quantum, the longest normal run and the window's
        longest stay within a quantum (``hold_n``, a coarse lattice's)."""
        self._qfloor = max(0.5 * self.quantum, _ABS_FLOOR)
        self._q2 = self._qfloor + self._qfloor  # (the quiet side's floor of its recent E|dx|, see _step)
        # (on a coarse lattice the run the level's own stay within a quantum makes, see fit: a wander
        # rounded to 8 noise widths held one value 627 readings where its window's longest run was
        # 209, and the stuck channel called it stuck, scripts/quantum_probe.py)
        h = self.run_max if self.run_max > self.hold_n else self.hold_n
        lim = _STUCK_FACTOR * h
        self._stuck_lim = lim if lim > _STUCK_MIN else float(_STUCK_MIN)
        self._i_stuck = 1.0 / self._stuck_lim if self.quantum > 0.0 else 0.0
        self._rail_tol = rail.TOL * self.quantum
        lim = self.rail_lim
        self._i_rail = 1.0 / (lim - self.rail_o) if lim > self.rail_o else 0.0
        self._rail_cap = rail.CAP * lim if lim > 0.0 else 1e300
        lim = self.lat_lim
        self._lat_tol = lattice.FINER * self.lat_q  # (0 where off: no |step| is below it)
        self._i_lat = 1.0 / (lim - self.lat_o) if lim > self.lat_o else 0.0
        self._lat_cap = lattice.CAP * lim if lim > 0.0 else 1e300

    def _update_thresholds(self) -> None:
        for c in range(_N_CAL):
            self._set_threshold(c, self.cal_q[c], self.cal_m[c])
        self._refresh_plain()
        self._refresh_seasonal()

    def _refresh_plain(self) -> None:
        """What the per-reading path scores the plain model of normal with (its scales
        floored, each channel's normal and threshold in value units, the level clip), the
        variance and stuck channels' constants: they change only with the slow statistics and
        the tails, so they are cached here (and in _tail) rather than computed per reading."""
        floor = self._qfloor
        level = self.level
        lf = 1e-9 * (level if level > 0.0 else -level)
        if floor < lf:
            floor = lf
        s = self.f_scale
        fsc = self._fsc = s if s > floor else floor
        if self.b_gain > 0.0:
            s *= self.b_ratio
            self._i_bk = 1.0 / (s if s > floor else floor)
        else:
            self._i_bk = 0.0
        self._b_at = self._b_z + self._qfloor / fsc  # the burst count's level, in predictor scales (see _step)
        s = self.scale
        scale = self._sc = s if s > floor else floor
        # (level unit, drift unit, drift floor, clip floor) of the model: the units turn a
        # standardised threshold into value units (1.2533 x the channel's spread, its mean
        # |value|, floored at half what independent residuals would give); a drift must reach at
        # least _DRIFT_MIN scales; a level clip is at least _LEVEL_CLIP scales (see _constants).
        v_l, v_d = self.v_level, self.v_drift
        if v_l < _V_LEVEL_MIN * scale:
            v_l = _V_LEVEL_MIN * scale
        if v_d < _V_DRIFT_MIN * scale:
            v_d = _V_DRIFT_MIN * scale
        u = 1.2533 * v_d
        self._up = (1.2533 * v_l, u, _DRIFT_MIN * scale, _LEVEL_CLIP * scale)
        if self.n_fit:
            # The young drift threshold's allowance (see young_bound): b² changes slowly with the
            # readings seen, so it is recomputed only when they grew by 2 % (the scales' phase is
            # the p99 of scoring: computed on every refresh it cost that phase 0.3 µs).
            k = self.n_fit + self.n
            if k > self._yk:
                self._yk = 1.02 * k
                self._yb = young_bound(k * _DRIFT_SAMPLE) - 1.0
            w = _SD_DRIFT * scale  # the drift unit on independent residuals ...
            x = 1.0 - w * w / (u * u)  # ... and the share of the spread beyond it
            self._ya = (1.0 + self._yb * x) ** 0.5 if x > 0.0 else 1.0
        else:
            self._ya = 1.0
        v = self.v_trend
        n = self._tnoise * scale
        self._vtx = (v * v - n * n) ** 0.5 if v > n else 0.0  # the trend's variability beyond its estimator's noise
        self._constants(False)
        if self.f_alpha > _SLOW:
            self._short_constants()
            self._slope_constants()
        else:  # (both off, as those two set them, without the two calls: this is the scales' phase, scoring's p99;
            # the short-term level's (normal, 1 / (threshold - normal), clip) is read only where its gate
            # _i_sh is not 0, and _short_constants sets it wherever it turns on: not refreshed here)
            self._ksl = (0.0, 0.0)
            self._i_sh = self._i_sl = 0.0
        d = self.d_norm
        self._var_cap = _VAR_CLIP * d
        self._i_dn = 1.0 / d  # (the stuck channel's constant changes only with the quantum and run: _limits)

    def _refresh_seasonal(self) -> None:
        """The same for the seasonal model of normal."""
        floor = self._qfloor
        level = self.level
        lf = 1e-9 * (level if level > 0.0 else -level)
        if floor < lf:
            floor = lf
        s = self.s_scale
        scale = self._ssc = s if s > floor else floor
        v_l, v_d = self.v_level_s, self.v_drift_s
        if v_l < _V_LEVEL_MIN * scale:
            v_l = _V_LEVEL_MIN * scale
        if v_d < _V_DRIFT_MIN * scale:
            v_d = _V_DRIFT_MIN * scale
        self._us = (1.2533 * v_l, 1.2533 * v_d, _DRIFT_MIN * scale, _LEVEL_CLIP * scale)
        self._constants(True)

    def _constants(self, seasonal: bool) -> None:
        """One model's level and drift constants in value units: (level normal, 1 / (level
        threshold - normal), drift normal, 1 / (drift threshold - normal)), and its level clip.

        The clip: how far one residual may count towards the level and drift channels. A level
        is what persists, so one reading moves them by a bounded amount (4 noise scales) ...
        but never less than twice their thresholds: on a series whose residuals are correlated
        (a wandering level, slow dynamics), the channels' spreads are several noise scales, and
        a clip at 4 scales kept them below their thresholds whatever the fault."""
        thr, off = self.thr, self.off
        if seasonal:
            u_l, u_d, d_min, clip = self._us
            t_l, o_l, t_d, o_d = thr[LEVEL_S], off[LEVEL_S], thr[DRIFT_S], off[DRIFT_S]
        else:
            u_l, u_d, d_min, clip = self._up
            t_l, o_l, t_d, o_d = thr[LEVEL], off[LEVEL], thr[DRIFT], off[DRIFT]
        t_drift = u_d * t_d
        c = _LEVEL_CLIP_THR * t_drift
        if c > clip:
            clip = c
        if not seasonal:
            # (after the clip: the allowance raises what the drift channel must reach, not how far
            # a reading counts towards the level channel, which held its alarms longer with it)
            t_drift *= self._ya
        if t_drift < d_min:
            t_drift = d_min
        n_d = u_d * o_d
        if n_d > 0.5 * t_drift:
            n_d = 0.5 * t_drift
        c = _LEVEL_CLIP_THR * u_l * t_l
        if c > clip:
            clip = c
        k = (u_l * o_l, 1.0 / (u_l * (t_l - o_l)), n_d, 1.0 / (t_drift - n_d))
        if self.coarse:
            # On a lattice coarser than the noise a held reading is anywhere within half a
            # quantum of the level, and that error does not average out while it is held: a
            # mean of readings is not resolved finer than q / 2, so neither channel's threshold
            # stands nearer its normal than that (a wander rounded to 8 noise widths: "level
            # shift: -1.7 off normal", under half its quantum of 4, scripts/quantum_probe.py).
            # (A signal that holds and jumps flips between its two values often enough that a
            # mean resolves finer: SKAB's flow meter lost two level raises to this floor.)
            q = self._qfloor
            w_l, w_d = u_l * (t_l - o_l), t_drift - n_d
            k = (k[0], 1.0 / (w_l if w_l > q else q), n_d, 1.0 / (w_d if w_d > q else q))
        if seasonal:
            self._ks, self._clip_s = k, clip
        else:
            self._kp, self._clip_p = k, clip

    def _level_constants(self) -> None:
        """The plain model's level half of _constants alone, after a tails' part that moved only
        the level channel's tail (tails 1, much of scoring's p99 on white noise); the same
        arithmetic in the same order, so its results are _constants' to the bit (a test holds
        the three to it). The drift half (``_kp[2:]``) is kept: its inputs (the drift tail, the
        units ``_up``, the young allowance ``_ya``, ``coarse``, the quantum's floor) change only
        where _constants or _drift_constants runs after them. The clip takes both thresholds,
        so it is taken again from both."""
        thr = self.thr
        u_l, u_d, d_min, clip = self._up
        t_l, o_l = thr[LEVEL], self.off[LEVEL]
        c = _LEVEL_CLIP_THR * (u_d * thr[DRIFT])
        if c > clip:
            clip = c
        c = _LEVEL_CLIP_THR * u_l * t_l
        if c > clip:
            clip = c
        w = u_l * (t_l - o_l)
        if self.coarse:  # (the resolution's floor, see _constants)
            q = self._qfloor
            if not w > q:
                w = q
        k = self._kp
        self._kp, self._clip_p = (u_l * o_l, 1.0 / w, k[2], k[3]), clip

    def _drift_constants(self) -> None:
        """The plain model's drift half of _constants alone, after a tails' part that moved only
        the drift channel's tail (tails 2); exact as _level_constants, the level half kept."""
        thr = self.thr
        u_l, u_d, d_min, clip = self._up
        t_drift = u_d * thr[DRIFT]
        c = _LEVEL_CLIP_THR * t_drift
        if c > clip:
            clip = c
        t_drift *= self._ya  # (after the clip, see _constants)
        if t_drift < d_min:
            t_drift = d_min
        n_d = u_d * self.off[DRIFT]
        if n_d > 0.5 * t_drift:
            n_d = 0.5 * t_drift
        c = _LEVEL_CLIP_THR * u_l * thr[LEVEL]
        if c > clip:
            clip = c
        w = t_drift - n_d
        if self.coarse:
            q = self._qfloor
            if not w > q:
                w = q
        k = self._kp
        self._kp, self._clip_p = (k[0], k[1], n_d, 1.0 / w), clip

    def _short_constants(self) -> None:
        """The short-term level's (normal, 1 / (threshold - normal), clip) in value units: its
        unit is 1.2533 x its mean |value| on normal readings (floored at half what independent
        residuals give); one residual counts at most _LEVEL_CLIP predictor scales, so one
        reading (a spike) moves it at most 0.3 x 4 scales (~3 of its spreads on independent
        residuals), and a series whose own history puts its threshold beyond what a clipped
        shift can reach (a signal whose routine moves are abrupt: NAB's daily square waves)
        has it silent by its own calibration. Unlike the level channel's, the clip does not
        grow with the threshold: there, correlated residuals needed it to reach a threshold at
        all; here it let every large routine jump reach twice its threshold whatever the tail
        had learned (NAB 193 false detections, against 99).

        The channel speaks only where the predictor is faster than the model of normal
        (``f_alpha`` > ``_SLOW``): where the steadiest good predictor is no faster (white noise,
        a slow wander), the model of normal sees a shift as soon, and the level channel,
        averaging longer, judges it better (ungated: SKAB FAR 31 %, 3 nuisance alarms more)."""
        s = self._fsc
        clip = _LEVEL_CLIP * s
        if self.f_alpha <= _SLOW:  # (tested first: the scales' phase, scoring's p99, pays no unit for an off channel)
            self._ksh = (0.0, 0.0, clip)  # i = 0: the channel is off (see _step)
            self._i_sh = 0.0
            return
        v = self.v_short  # (_short_unit, inlined: the scales' phase)
        u = 1.2533 * (v if v > _V_SHORT_MIN * s else _V_SHORT_MIN * s)
        t, o = self.thr[SHORT], self.off[SHORT]
        w = u * (t - o)
        if self.coarse and w < self._qfloor:  # (not resolved finer than half a quantum: see _constants)
            w = self._qfloor
        i = self._i_sh = 1.0 / w
        self._ksh = (u * o, i, clip)

    def _short_unit(self) -> float:
        """The short-term level's unit: 1.2533 x its mean |value| on normal readings, floored at
        half what independent residuals give."""
        s = self._fsc
        v = self.v_short
        return 1.2533 * (v if v > _V_SHORT_MIN * s else _V_SHORT_MIN * s)

    def _slope_unit(self) -> float:
        """The slope channel's unit: 1.2533 x its mean |value| on normal readings, floored at
        half what white noise gives at the predictor's rate."""
        v, w = self.v_slope, self._sw_half * self._fsc
        return 1.2533 * (v if v > w else w)

    def _slope_constants(self) -> None:
        """The slope channel's (normal, 1 / (threshold - normal)) in value units per reading.

        The channel: the short-term predictor's moves (its step from one prediction to the
        next, Huber-limited as it learns; a level it adopts is no move) averaged over ~50
        readings, less a reference that follows that average by Brown's double smoothing at
        0.05, so that it follows a slope that changes steadily (a curve's) without lag. On a
        curve the model of normal lags (a daily cycle before its profile serves), the level and
        drift channels see the lag and a ramp alike, as residuals of a few noise widths; in
        slope the two differ: a cycle's slope changes by at most its amplitude x (2 pi / period)²
        a reading, which the reference follows, while a ramp's onset changes it at once. The
        model of normal's own trend (Brown's at 0.01) was no reference: it lags a cycle's slope
        by about the slope itself, and the difference was as large on the cycle as on a ramp.
        The reference learns with the model of normal and stands still with it; the channel is
        silent while it stands still (an episode raised by another channel: a fault's recovery
        is not a new onset; held by this channel, SKAB's temperature alarms lasted 20 rows
        longer), and the reference restarts from the predictor's course when learning resumes.
        This channel raises; it freezes nothing, so it holds nothing (a ramp caught by its onset
        is held by the level and drift channels, or not). On, like the short-term level, only
        where the predictor is faster than the model of normal (``f_alpha`` > ``_SLOW``): where
        it is not, the model of normal follows as fast, and the drift channel sees a ramp as
        soon."""
        if self.f_alpha <= _SLOW:
            self._ksl = (0.0, 0.0)  # off (see _step)
            self._i_sl = 0.0
            return
        v, w = self.v_slope, self._sw_half * self._fsc  # (_slope_unit, inlined: the scales' phase)
        u = 1.2533 * (v if v > w else w)
        t, o = self.thr[SLOPE], self.off[SLOPE]
        i = self._i_sl = 1.0 / (u * (t - o))
        self._ksl = (u * o, i)

    def _set_threshold(self, c: int, q: float, m: float) -> None:
        """A channel's threshold (its tail extrapolated to ``rate``, floored: exponentially, the
        spike's as a generalised Pareto tail of its learned shape, see _learn_shape), and its
        normal: the 98 % quantile it tracks (at most half the threshold). Each channel scores 0 at its
        normal and 1 at its threshold, so the hysteresis of the alarm and of learning
        (``learn_below``, ``alarms.hold_ratio``) is measured from what the channel does in
        normal operation: back to normal means back within its own normal spread. Measured from
        zero, a signal whose normal readings reach 0.7 of a threshold (the flow on SKAB's pump,
        whose routine one-quantum jumps score 0.75 on the spike channel) held every alarm it
        raised to the end of the recording."""
        t = q + (self._g_sp if c == SPIKE and self._g_sp else self._k) * m
        floor = _FLOORS[c]
        if t < floor:
            t = floor
        o = q if q < 0.5 * t else 0.5 * t
        self.thr[c] = t
        self.off[c] = o
        if c == SPIKE:
            self._spike_constants(t, o)
        elif c == VAR:
            self._o_v, self._i_v = 1.0 + o, 1.0 / (t - o)
        elif c == QUIET:
            self._o_q, self._i_q = 1.0 + o, 1.0 / (t - o)
        elif c == BURST:
            self._o_b, self._i_b = o, 1.0 / (t - o)
            self._b_cap = _BURST_CAP * t
        elif c == BACK:
            self._o_bk, self._j_bk = o, 1.0 / (t - o)


    def _spike_constants(self, t: float, o: float) -> None:
        """The spike channel's cached (normal, 1 / (threshold - normal)), and the burst count's
        level, which is a share of the way from that normal to that threshold."""
        self._o_sp, self._i_sp = o, 1.0 / (t - o)
        self._b_z = o + _BURST_AT * (t - o)
        self._b_at = self._b_z + self._qfloor / self._fsc

    # ---- scoring ---------------------------------------------------------------------------
    def score_many(self, xs: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
        # A strict recurrence (each score depends on all earlier readings): the same loop.
        arr = np.asarray(xs, dtype=np.float64)
        out = np.empty(arr.shape[0], dtype=np.float64)
        step = self._step
        times: list[Any] = [None] * arr.shape[0] if ts is None else np.asarray(ts, dtype=np.float64).tolist()
        for i, x in enumerate(arr.tolist()):
            out[i] = step(x, times[i], False, None)
        return out

    def score_after_gap(self, x: float, ts: float, gap_s: float) -> float:
        """Score the first reading after ``gap_s`` seconds without one (a sensor offline, a link
        down), longer than ``gap_s`` (the attribute: twice the series' typical interval).

        The readings that did not come are not invented; what the models would have expected
        of them is: the model of normal's forecast runs on through the gap (its trend, as
        while frozen; the anchor's time), and the short-term predictor's forecast too, while
        the uncertainty of its level grows with each missed reading as its own rate implies
        (a local level model with gain ``f_alpha``: a level variance of f_alpha² / (1 -
        f_alpha) noise variances a reading). The reading then teaches the predictor at the
        Kalman gain that uncertainty gives before it is scored: after a long gap on a wander
        the predictor takes the reading almost whole, and its one-step channels (spike,
        short-term level, slope) see almost nothing of a move the gap explains; on white
        noise (a rate of ~0.003) the gain barely moves. The channels judged against the
        model of normal judge the reading as any other: a dropout to 0 after a gap is
        still a level far from normal. Without it, the suite's normal signals with two
        gaps of 1 and 8 hours raised 20 alarms over four seeds (scripts/plant_normals_probe.py)."""
        if self.states:  # (a status has no forecast to run on; gap_s is inf there anyway)
            return self._step(x, ts)
        dt = self.dt
        g = gap_s / dt - 1.0 if dt > 0.0 else 0.0  # readings missed
        if g > 0.0:
            if self.shadow_n:  # frozen: the forecast runs on as it does while frozen (see _step)
                self.horizon += g
                if not self.day_g:
                    self.level += self.trend * g
            else:
                self.level += self.trend * g
            if self.a_inv:
                self.a_t += int(g)
            a = self.f_alpha
            if 0.0 < a < 1.0:
                p = a / (1.0 - a)  # the predicted level's variance, in noise variances
                pg = p + g * a * p  # ... after g more steps of the level's own innovation (a² / (1 - a))
                k = pg / (pg + 1.0)
                fl = self.f_level
                if self.f_beta:
                    # A slope learned over ~1 / f_beta readings is no forecast far beyond them
                    # (extrapolated 8 hours, a daily cycle's local slope missed by ~50 noise
                    # widths): the slope over the gap takes over as far as the reading does.
                    self.f_trend += k * ((x - fl) / (g + 1.0) - self.f_trend)
                fl += self.f_trend * g
                move = (k - a) / (1.0 - a) * (x - fl - self.f_trend)  # (_step then learns at f_alpha: k in all)
                self.f_level = fl + move
                if self._i_sl and (move if move > 0.0 else -move) > _CLIP * self._fsc:
                    # a move the predictor makes only by jumping: the slope restarts, as at a jump (see _step)
                    self.g_slope = self.r_slope + self.t_slope
                    self.m_slope = 0.0
                    self.slope_from = self.n + _SLOPE_QUIET
        return self._step(x, ts)

    def _step(self, x: float, ts: float | None = None, training: bool = False, collect: list[list[float]] | None = None) -> float:
        # The per-reading path: written for CPython's speed (locals, no calls on the common
        # path); the slow statistics learn every _SLOW_EVERY calm readings in _learn_slow.
        # Interpreted, it is score_one itself (below): a wrapper's call frame cost ~1 % of a reading.
        # ``training`` and ``collect``: the fit's own pass over its window (see fit).
        x = float(x)
        if self.states:  # a status or mode signal (robust_states.py); never one while training
            self.prev = x
            return state_score(self.states, self.threshold, x)
        # -- the spike channel: the short-term predictor
        f_pred = self.f_level + self.f_trend
        e_f = x - f_pred
        f_scale = self._fsc
        z = (e_f if e_f > 0.0 else -e_f) / f_scale
        # -- level and drift: against the plain model of normal ...
        lin = pred = self.level + self.trend
        dg = self.day_g
        timed = ts is not None and ts == ts  # (a reading with a time; tested once, used thrice)
        if dg:
            if timed:
                # The daily sinusoid, on series whose training window showed one (robust_stats.
                # daily_component): a first-day daily cycle, before the profile has seen two days,
                # is a curve that Brown's level and trend lag by ~0.4 of its amplitude (several noise
                # widths), so that a ramp or a step looked like the lag, and a frozen model's line
                # left the curve within a few hundred readings. With its one harmonic in the model
                # of normal, the lag is gone and a frozen forecast follows the day. Its coefficients
                # learn (LMS) with the level, over about a day's readings, and stand still with it.
                ph = (ts % _PERIOD_S) * _OMEGA_S  # type: ignore[operator]
                d_cos = math.cos(ph)
                d_sin = math.sin(ph)
                y = self.day_c * d_cos + self.day_s * d_sin
                self._day_y = y
                pred += y
            else:  # (a reading without a time: the sinusoid sits it out)
                dg = 0.0
        e = x - pred
        clip_p = self._clip_p
        ec = e if -clip_p < e < clip_p else (clip_p if e > 0.0 else -clip_p)
        m_level = self.m_level
        m_level += _LAMBDA_LEVEL * (ec - m_level)
        m_drift = self.m_drift
        m_drift += _LAMBDA_DRIFT * (ec - m_drift)
        self.m_level = m_level
        self.m_drift = m_drift
        # ... and against the seasonal one, when the reading has a time: on every reading while
        # the daily profile serves; else in the background, on one reading in _prof_k (a tick:
        # it learns there, and its channels follow at the matching rate), so that a series
        # without a daily pattern pays a fraction of it (3.4 -> 2.6 us a reading at one a minute).
        bin_i = -1  # (and frac, pv, e_s: set, and used, only where the profile is read)
        seasonal = tick = waits = False
        if timed:
            serving = self.seasonal
            t = self.p_tick + 1
            if t >= self._prof_k:
                t = 0
                tick = True
            self.p_tick = t
        else:
            serving = False
        if serving or tick:
            ph = (ts % _PERIOD_S) * _BINS_PER_S  # type: ignore[operator]
            bin_i = int(ph)
            if bin_i >= _BINS:
                bin_i = _BINS - 1
            frac = ph - bin_i
            prof = self.prof
            b = bin_i + 1
            if b >= _BINS:
                b = 0
            pv = prof[bin_i]
            pv += frac * (prof[b] - pv) - self.prof_shift
            e_s = x - self.ds_level - pv
            c = self._clip_s
            ec = e_s if -c < e_s < c else (c if e_s > 0.0 else -c)
            m_ls, m_ds = self.m_level_s, self.m_drift_s
            if not serving:
                lam_l, lam_d = self._lam_k
                self.m_level_s = m_ls + lam_l * (ec - m_ls)
                self.m_drift_s = m_ds + lam_d * (ec - m_ds)
            else:
                self.m_level_s = m_ls + _LAMBDA_LEVEL * (ec - m_ls)
                self.m_drift_s = m_ds + _LAMBDA_DRIFT * (ec - m_ds)
                # The profile serves where it can be trusted: both bins it interpolates have seen
                # two days, and the later days agree with them about as well as their first day
                # did. A bin learned from one day that held an unnoticed fault would otherwise
                # alarm on every later day at that time, and, frozen by its own alarm, never learn.
                seen, base_, dev, tol, t0 = self.seen, self.base, self.dev, self._trust_n, self._trust_tol
                seasonal = (seen[bin_i] >= tol and seen[b] >= tol and dev[bin_i] <= _TRUST_DEV * base_[bin_i] + t0
                            and dev[b] <= _TRUST_DEV * base_[b] + t0)
        # Each channel scores 0 at its normal and 1 at its threshold (see _set_threshold); the
        # constants that say so change only in the slow phases (see _refresh_plain).
        h = self.horizon  # (read once: also where the model of normal learns, below)
        if seasonal:
            # A reading the daily profile expects (within _EXPECTED of its scales) is no spike,
            # however far it jumps from the last few: a daily step change, a shift start.
            zs = (e_s if e_s > 0.0 else -e_s) / self._ssc
            if zs < _EXPECTED and zs < z:
                z = zs
            n_level, n_drift = self.m_level_s, self.m_drift_s
            o_l, i_l, o_d, i_d = self._ks
        else:
            n_level, n_drift = m_level, m_drift
            o_l, i_l, o_d, i_d = self._kp
            if h:
                # The model of normal stands still (see below): its expected value is a
                # forecast h readings ahead, whose error grows by h x the trend's own
                # variability (a local-linear-trend model's). The level and drift channels judge
                # the residual against their spreads widened by it: a series whose trend is
                # steady keeps a tight band and holds its alarm, one whose trend wanders in
                # normal operation lets go of an alarm that is only the forecast's drift, a
                # stationary one holds for ever. Only readings of a frozen model pay for it.
                f = 1.2533 * h * self._vtx
                f *= f
                u_l, u_d = self._up[0], self._up[1]
                n_level *= u_l / (u_l * u_l + f) ** 0.5
                n_drift *= u_d / (u_d * u_d + f) ** 0.5
        # The score is the largest channel's, and at least 0 (a channel with nothing to say scores
        # 0): each channel is folded in where it is computed, so that one that is off, or outside
        # the branch where it can score above 0, costs no comparison.
        score = s_spike = (z - self._o_sp) * self._i_sp
        s_range = 0.0
        if s_spike >= _RANGE_SPIKE:
            if self.levels and not training and self._to_operating_level(e):
                return self._step(x, ts)  # scored again, against the level it moved to
            margin = _RANGE_MARGIN * (self.hi - self.lo)
            if x > self.hi + margin or x < self.lo - margin:
                score = s_range = s_spike / _RANGE_SPIKE  # (beyond s_spike)
        elif s_spike < 0.0:
            score = 0.0
        a_l = (n_level if n_level > 0.0 else -n_level) - o_l
        s_level = a_l * i_l
        if s_level > score:
            score = s_level
            # (a move the spike channel does not see as one: a window that held the levels,
            # whose spike tail learned their moves as routine; the level channel says it. Only
            # there: on levels only a rebaseline gave, a bursty series' level channel moved
            # between them, NAB's ec2_network_in_5abac7 and ec2_cpu_utilization_fe7f93)
            if s_level >= 1.0 and self.lv_win and not training and self._to_operating_level(e):
                return self._step(x, ts)
        # The drift channel counts only as far as the recent level still shows the deviation
        # beyond the level's own normal spread: during a ramp the ~7-reading level is ahead of
        # the ~50-reading drift; once the signal is back, the drift channel's long memory must
        # not hold the alarm, nor may the noisier ~7-reading level, compared with the drift's
        # lower threshold, raise a new one (a drift alarm 54 readings after a step ended).
        if n_drift != 0.0 and n_level / n_drift > 0.0:
            a_d = n_drift if n_drift > 0.0 else -n_drift
            if a_l < a_d:
                a_d = a_l
            s_drift = (a_d - o_d) * i_d
            if s_drift > score:
                score = s_drift
        else:
            s_drift = 0.0
        # -- the last reading judged from both sides, now that this one is in: its residual less
        # what this reading says of where the series was then (b_gain x this reading's distance
        # from the forecast made before the last one). A spike comes back, so it keeps all of
        # itself, against the smaller scale of a residual that knows the next reading; the move
        # of a level that wanders by its noise between readings does not (see interpolation_gain).
        # Judged one reading late, against its own calibrated tail.
        i_b = self._i_bk
        if i_b:
            s_back = 0.0
            x_back = self.prev
            ep = self.e_prev
            yb = x - self.fp_prev  # this reading against the forecast made before the last one
            gy = self.b_gain * yb
            r_back = ep - gy
            # Its tail learns from every reading's value, judged or not: the conditions below
            # only remove values, so the threshold of the whole statistic's tail bounds them.
            zb = self._zbk = (r_back if r_back > 0.0 else -r_back) * i_b
            # Judged only for a one-reading excursion that came back: the last reading stood out
            # by itself (beyond the spike channel's normal) and the one before it did not (a
            # noise burst's readings are no spikes: caught early as one, its alarm was let go
            # before the variance channel held it); this reading moves where the level was by
            # less than the last one deviated (else a jump of this reading, a step or a square
            # wave's edge, made the calm reading before it a spike: NAB's CPU series), and is
            # nearer the forecast than the last reading (a step's first reading is no spike: it
            # scores (1 - g) of the step against a scale that can be half the predictor's, as a
            # pump's current's jump back at a fault's end did).
            ab = ep if ep > 0.0 else -ep
            n_sp = self._o_sp * f_scale
            cb = x - x_back
            ay = yb if yb > 0.0 else -yb
            if (ab > n_sp and -n_sp < self.e_prev2 < n_sp and (gy if gy > 0.0 else -gy) < ab
                    and ay < (cb if cb > 0.0 else -cb) and ay < n_sp * self.b_yscale):
                s_back = (zb - self._o_bk) * self._j_bk
                if s_back > score:
                    score = s_back
            self.e_prev2 = ep
            self.e_prev = e_f
            self.fp_prev = f_pred + self.f_trend
        else:  # (off: nothing stored, nothing paid but this test; the fit sets them where it turns it on)
            s_back = 0.0  # (its residual and reading, for explain, are set below where read)
        # -- the short-term level: the predictor's residual averaged over a few readings, against
        # the predictor as it would be without the jumps it adopted (each fades at the predictor's
        # own rate). The predictor follows the curve of a cycle that the slow model of normal lags,
        # so an abrupt lasting shift shows here before the model of normal can tell it from its lag.
        # Only where the predictor is faster than the model of normal (see _short_constants).
        i_sh = self._i_sh
        if i_sh:
            o_sh, _, c = self._ksh
            m_short = self.m_short
            r = e_f
            fj = self.f_jump
            if fj != 0.0:
                r += fj
            m_short += _LAMBDA_SHORT * ((r if -c < r < c else (c if r > 0.0 else -c)) - m_short)
            self.m_short = m_short
            s_short = ((m_short if m_short > 0.0 else -m_short) - o_sh) * i_sh
            if s_short > score:
                score = s_short
            if fj != 0.0 and not (self.shadow_n and s_short >= self.learn_below):
                # The jump fades as the predictor would have learned it, except while it holds its
                # own episode (the model of normal stands still and this channel is at or above
                # learn_below): a step on a curve the model of normal lags is held by the jump
                # itself until a jump back ends it (below), not let go after ~1 / f_alpha readings.
                fj *= 1.0 - self.f_alpha
                self.f_jump = fj if (fj if fj > 0.0 else -fj) > 0.01 * f_scale else 0.0
        else:
            s_short = 0.0
        # -- the slope: a change in the predictor's course, against a reference that follows a
        # steadily changing one (learned below, from the readings up to the last). Only where
        # the predictor is faster than the model of normal, and silent while the model of normal
        # stands still (see _slope_constants).
        i_sl = self._i_sl
        if i_sl and not self.shadow_n and self.n >= self.slope_from:
            m_slope = self.m_slope
            s_slope = ((m_slope if m_slope > 0.0 else -m_slope) - self._ksl[0]) * i_sl
            if s_slope > score:
                score = s_slope
        else:
            s_slope = 0.0
        # -- noise and repeats
        dx = x - self.prev
        if dx < 0.0:
            dx = -dx
        self.prev = x
        dxc = dx if dx < self._var_cap else self._var_cap
        d_fast = self.d_fast
        d_fast += _LAMBDA_VAR * (dxc - d_fast)
        self.d_fast = d_fast
        s_var = (d_fast * self._i_dn - self._o_v) * self._i_v
        # The quiet side: the noise fallen well below its normal (a transmitter frozen with a
        # dither, a filter switched in, a clipped reading) is a deviation as noise risen is.
        # One-sided, a quiet period taught the scales that quiet was normal, and the return of
        # the normal noise raised the alarm after the fault. Its recent E|dx|, d_low, falls at
        # the ~33-reading rate (quiet shows only in many small differences) and rises at once to
        # the ~7-reading one (its end shows in a few normal ones): at the slow rate alone a stuck
        # sensor's alarm was held ~45 readings after it moved again, and, averaged with the
        # quick one, the quick one's own dips raised it again after the fault. It scores normal
        # / d_low against its own calibrated tail (quiet stretches are routine on some series),
        # d_low counting at least one quantum: noise finer than the resolution is not
        # measurable, so a quantised signal whose noise is at its step floor never scores here.
        # A repeated value does not lower d_low: a run of repeats is what the stuck channel
        # judges, against the longest run seen in normal operation (lowered by repeats, the
        # quiet side alarmed on a quantised signal's routine holds, 0.6 of the stuck limit).
        d_quick = self.d_quick
        d_quick += _LAMBDA_QUICK * (dxc - d_quick)
        self.d_quick = d_quick
        d_low = self.d_low
        if dx != 0.0:  # a repeated value is the stuck channel's evidence, judged by its longest normal run
            d_low += _LAMBDA_VAR * (dxc - d_low)
        if d_low < d_quick:
            d_low = d_quick
        self.d_low = d_low
        if s_var < 0.0:
            s_q = (self.d_norm / (d_low if d_low > self._q2 else self._q2) - self._o_q) * self._i_q
            if s_q > s_var:
                s_var = s_q
        if s_var > score:
            score = s_var
        if dx == 0.0:
            ended_run = 0
            run = self.run = self.run + 1
            s_stuck = run * self._i_stuck
            if s_stuck > score:
                score = s_stuck
        else:
            ended_run = self.run  # (a run of repeats that ends here: see run_max below)
            if ended_run:
                self.run = 0
            run = 0
            s_stuck = 0.0
        # -- the lattice count (see lattice.py): steps finer than the resolution the window
        # showed, a value no longer the quantised transmitter's own. (The common case, a step
        # on the lattice or a repeat and no count, costs two comparisons; off, the tolerance is 0.)
        if dx < self._lat_tol and dx != 0.0:
            lc = self.lat_c * _LAT_KEEP + 1.0
            if lc > self._lat_cap:
                lc = self._lat_cap
            self.lat_c = lc
            s_lat = (lc - self.lat_o) * self._i_lat
            if s_lat > score:
                score = s_lat
        elif self.lat_c:
            lc = self.lat_c * _LAT_KEEP
            self.lat_c = lc if lc > 0.01 else 0.0
            s_lat = (lc - self.lat_o) * self._i_lat
            if s_lat > score:
                score = s_lat
        # -- the rail count (see rail.py): returns to the recent extreme, in a row or not. A
        # reading past the extreme ends its count (a railed transmitter cannot read beyond its
        # rail); a run of repeats counts only where it began as a return (a rail the process
        # stays beyond): one that became the extreme by outliving it is the stuck channel's
        # (counted, a stuck sensor's alarm was held ~40 readings past its release). A return to
        # the highest (lowest) reading since the extreme's last return, or since the last repeat
        # away from the extremes, makes that value the extreme: a rail caps the readings below
        # readings from before it, which would otherwise stay the extreme ~rail.MEMORY readings
        # while the rail's repeats shut the count as a coarse signal's (session 10).
        # (Written for the common case, a reading between the extremes with no count: its cost
        # is then a few comparisons and the extremes' ages.)
        s_rail = 0.0
        i_r = self._i_rail
        if i_r or training:
            rtol = self._rail_tol
            ch = self.rail_ch  # (each count decays only where it is not 0: the common case has none)
            if ch:
                ch *= _RAIL_KEEP
            cl = self.rail_cl
            if cl:
                cl *= _RAIL_KEEP
            ri = self.rail_in
            if ri:
                ri *= _RAIL_KEEP
            r = x - self.rail_hi
            r_lo = x - self.rail_lo
            hit = False
            if r < -rtol:  # below the upper extreme
                a = self.rail_ah
                if a >= _RAIL_MEMORY:
                    self.rail_hi = x
                    self.rail_ah = 0
                    self.rail_th = -1e300
                else:
                    self.rail_ah = a + 1
                    if x >= self.rail_th:  # at or above the highest reading since the extreme's last return
                        if x - self.rail_th > rtol + rtol or dx == 0.0:  # (above it, or a repeat in a row: no return)
                            self.rail_th = x - rtol
                        else:
                            # a return to it: that value, not the older and higher one no reading
                            # has come back to since, is the recent extreme (a rail caps the
                            # readings just below a reading from before it)
                            self.rail_hi = x
                            self.rail_ah = 0
                            self.rail_th = -1e300
                            hit = True
                            # (and, away from the old extremes, a repeat as coarse as below)
                            if -rtol <= x - self.rail_p1 <= rtol or -rtol <= x - self.rail_p2 <= rtol:
                                ri += 1.0
            elif r > rtol:  # beyond it: the new extreme, and the count ends
                self.rail_hi = x
                self.rail_ah = 0
                self.rail_th = -1e300
                if ch:
                    ch = self.rail_ch = 0.0
            else:
                hit = True
                self.rail_ah = 0
                self.rail_th = -1e300
            hit_lo = False
            if r_lo > rtol:
                a = self.rail_al
                if a >= _RAIL_MEMORY:
                    self.rail_lo = x
                    self.rail_al = 0
                    self.rail_tl = 1e300
                else:
                    self.rail_al = a + 1
                    if x <= self.rail_tl:
                        if x - self.rail_tl < -rtol - rtol or dx == 0.0:
                            self.rail_tl = x + rtol
                        else:
                            self.rail_lo = x
                            self.rail_al = 0
                            self.rail_tl = 1e300
                            hit_lo = True
                            if -rtol <= x - self.rail_p1 <= rtol or -rtol <= x - self.rail_p2 <= rtol:
                                ri += 1.0
            elif r_lo < -rtol:
                self.rail_lo = x
                self.rail_al = 0
                self.rail_tl = 1e300
                if cl:
                    cl = self.rail_cl = 0.0
            else:
                hit_lo = True
                self.rail_al = 0
                self.rail_tl = 1e300
            if hit or hit_lo:
                if (dx != 0.0 or self.rail_ok) and ri < 1.0:
                    if hit:
                        ch += 1.0
                        if training:
                            self._rail_n[0] += 1
                    if hit_lo:
                        cl += 1.0
                        if training:
                            self._rail_n[1] += 1
                if dx != 0.0:
                    self.rail_ok = 1
            else:
                if self.rail_ok and dx != 0.0:
                    self.rail_ok = 0
                # (a reading that repeats one of the two before it, at neither extreme: the signal
                # is locally as coarse as its quantum, and its extremes come back as routinely)
                if -rtol <= x - self.rail_p1 <= rtol or -rtol <= x - self.rail_p2 <= rtol:
                    ri += 1.0
                    # (the readings from here are judged against it: a return to it with none
                    # beyond it in between makes it the recent extreme, as a rail's value is)
                    self.rail_th = x - rtol
                    self.rail_tl = x + rtol
            self.rail_p2 = self.rail_p1
            self.rail_p1 = x
            if ri:  # (a count under 0.01 is none: the common case then stores nothing)
                self.rail_in = ri if ri > 0.01 else 0.0
            if ch or cl:
                cap = self._rail_cap
                if ch > cap:
                    ch = cap
                if cl > cap:
                    cl = cap
                self.rail_ch = ch if ch > 0.01 else 0.0
                self.rail_cl = cl if cl > 0.01 else 0.0
                s_rail = ((ch if ch > cl else cl) - self.rail_o) * i_r
                if s_rail > score:
                    score = s_rail
        # -- the burst count (see _BURST_AT): glitches or swings too many for the spike channel's
        # own calibration, each within its threshold. A reading counts when it is past _BURST_AT of
        # the spike threshold by more than half a quantum: the spike tail's exponential model does
        # not describe how often a quantised signal's two-quantum moves reach 0.3-0.45 of it (the
        # suite's quantised signal, seed 0: a nuisance alarm on its clean run). Off where the
        # training window showed the count has no null (see _burst_null_holds).
        bc = self.burst * _BURST_KEEP
        if z >= self._b_at and not self.burst_off:
            bc += 1.0
            if bc > self._b_cap:
                bc = self._b_cap
            # The glitches and the level that ends the count's hold (see _BURST_GAP). The previous
            # reading was counted iff the count has not decayed since it was last set: then this
            # one continues a run, which is no glitch but the predictor adopting a level (a
            # step's edge, a ramp it lags, a return), the level channels' to judge: it is taken
            # back. The glitches decay with the count; what each weighs beyond one glitch (see
            # _BURST_EV) waits in b_w until the next counted reading shows it stood alone.
            b_last = self.b_last
            sw = s_spike if s_spike < 1.0 else 1.0  # (past the threshold, its own alarm's)
            if b_last > 0.0:
                f = self.burst * _BURST_KEEP / b_last  # (KEEP ** the readings since the last counted one)
                b_ev = self.b_ev * f
                b_xe = self.b_xe * f
                if self.burst != b_last:
                    if f < _BURST_ALONE:  # the last glitch stood alone: its evidence counts
                        b_xe += self.b_w * f
                    b_ev += 1.0
                    w = (sw - (self._b_at - self._o_sp) * self._i_sp) * self._b_k
                    self.b_w = w if w > 0.0 else 0.0
                    self.b_run = 1
                elif self.b_run == 1:  # (once per run)
                    self.b_run = 2
                    b_ev = b_ev - 1.0 if b_ev > 1.0 else 0.0
                    self.b_w = 0.0
            else:  # the first since the fit (or a rebaseline)
                b_ev = 1.0
                b_xe = 0.0
                w = (sw - (self._b_at - self._o_sp) * self._i_sp) * self._b_k
                self.b_w = w if w > 0.0 else 0.0
                self.b_run = 1
            self.b_ev = b_ev
            self.b_xe = b_xe
            self.b_last = bc
            if _BURST_EV <= b_ev + b_xe and 0.0 < b_ev < _BURST_MEMORY:  # (b_ev > 0: it divides below)
                g = _BURST_GAP / math.log1p(-b_ev / _BURST_MEMORY)
                self.b_hold = bc * math.exp(g if g > _BURST_SPAN else _BURST_SPAN)
            else:
                # A reading past the spike threshold alone (a spike alarm's own) holds while one
                # more glitch would still start the hold above, its predecessors then weighing
                # _BURST_EV - 1 (its own weight counted: it will have stood alone), and while the
                # count is beyond its own normal (the hold's first test, at the end of _step):
                # 18-32 readings on white noise, none where a glitch is routine (see _BURST_GAP).
                pe = b_ev + b_xe + self.b_w
                self.b_hold = bc * (_BURST_EV - 1.0) / pe if sw >= 1.0 and pe > _BURST_EV - 1.0 else bc
        self.burst = bc
        s_burst = (bc - self._o_b) * self._i_b
        if s_burst > score:
            score = s_burst
        # -- the anchor: the live level (readings less the fit's daily sinusoid, ~7 readings)
        # against where the fit left normal, within what normal operation's own variogram says
        # the level can reach in a_t readings (see _anchor_bound). Nothing it learns can move the
        # anchor: a ramp slow enough to teach the model of normal its slope still leaves it.
        ia = self.a_inv
        if ia:
            at = self.a_t = self.a_t + 1
            if at >= self.a_next:
                self._anchor_bound()
                ia = self.a_inv
            ax = self.a_x
            ra = (x - (self.a_c * d_cos + self.a_s * d_sin) if dg else x) - ax
            ax += _LAMBDA_LEVEL * (ra if -clip_p < ra < clip_p else (clip_p if ra > 0.0 else -clip_p))
            self.a_x = ax
            da = ax - self.a_level
            s_anchor = (da if da > 0.0 else -da) * ia
        else:
            s_anchor = 0.0
        lb = self.learn_below
        if score >= lb:  # what explain() needs (it is called only for a reading that raises)
            if not i_b:
                r_back = x_back = 0.0
            self._last = (e_f, f_pred, f_scale, n_level if seasonal else m_level, n_drift if seasonal else m_drift, d_fast, run, seasonal, s_spike, s_level, s_drift, s_var, s_stuck, s_range,
                          s_short, self.m_short, s_slope, self.m_slope, s_burst, bc, s_back, r_back, x_back)
        if collect is not None:
            collect[SPIKE].append(z)
            collect[_N_CAL].append(e_f)
            collect[_N_CAL + 1].append(f_pred + self.f_trend)
            collect[_N_CAL + 2].append(f_scale)
            collect[LEVEL].append(abs(m_level))
            collect[DRIFT].append(abs(m_drift))
            collect[VAR].append(max(0.0, d_fast / self.d_norm - 1.0))
            collect[QUIET].append(self._quiet_value())
            collect[SHORT].append(abs(self.m_short))
            collect[SLOPE].append(abs(self.m_slope))
            collect[BURST].append(bc)
            if bin_i >= 0 and self.s_n >= _SETTLED:
                collect[LEVEL_S].append(abs(self.m_level_s))
                collect[DRIFT_S].append(abs(self.m_drift_s))
        # -- learning. The short-term predictor always learns, Huber-limited; a residual beyond
        # the clip on _REACQUIRE readings in a row, all on one side, is not an outlier but a
        # new level: the predictor jumps to it (the model of normal does not).
        cf = _CLIP * f_scale
        learned: float | None = e_f  # the residual the predictor learned from (None: it jumped)
        if -cf < e_f < cf:
            self.f_out = 0
            self.f_level = f_pred + self.f_alpha * e_f
            if self.f_beta:
                self.f_trend += self.f_beta * e_f
        else:
            out = self.f_out
            out = (out + 1 if out > 0 else 1) if e_f > 0.0 else (out - 1 if out < 0 else -1)
            if out >= _REACQUIRE or out <= -_REACQUIRE:
                # The short-term level keeps seeing a jump away from normal (less what the clipped
                # update would have moved), fading at the predictor's own rate, as if it had been
                # learned Huber-limited: the jump stops the spike channel crying "spike", it is no
                # evidence that the new level is normal (without it: 2 cycle steps fewer caught,
                # 1 held). A jump towards normal (a fault's end) is the alarm's clear, left to the
                # hysteresis, as in the hand-over below (kept: alarms held 2x longer after drifts);
                # within an episode, one against the jump held ends that jump (see the fade above).
                if i_sh:
                    add = e_f - self.f_alpha * (cf if e_f > 0.0 else -cf)
                    fj = self.f_jump
                    if self.shadow_n and fj * add < 0.0:
                        # Within an episode, a jump against the jump held is the fault's end: the
                        # held jump ends with it, whatever its size (a cycle moved the level
                        # meanwhile; a remainder held an alarm 1,100 readings past a step's end).
                        self.f_jump = 0.0
                    elif (e if e > 0.0 else -e) > (e - e_f if e > e_f else e_f - e) and (fj != 0.0 or self.shadow_n < _REACQUIRE):
                        # (a jump that starts a held jump must come within the _REACQUIRE readings
                        # adopting a level takes from the episode's start: later it is the episode's
                        # course; judged "away" against a model of normal lagging a cycle, the jump
                        # back of a 3-reading excursion held its alarm for good)
                        self.f_jump = fj + add
                self.f_level, self.f_trend, self.f_out = x, 0.0, 0
                learned = None
                if i_sl:  # a jump says nothing of the slope: its estimate restarts at the reference
                    self.g_slope = self.r_slope + self.t_slope
                    self.m_slope = 0.0
                    # ... and the channel is silent for the average's memory of readings learned
                    # from: what it holds until then is the predictor's way from the level it
                    # adopted (often the last of three noisy readings, or a stuck sensor's
                    # release) back to the series' course, a transient of its own restart, not a
                    # change of course. Speaking at once, it raised on a clean trend, a clean
                    # cycle and a stuck sensor's release (suite seeds 1-2: 3 nuisance alarms).
                    self.slope_from = self.n + _SLOPE_QUIET
                # Within an anomalous episode (a spike alarm whose readings then held beyond the
                # clip), the same evidence tells the level channel that the level moved away from
                # normal: it takes the new level's residual at once rather than climbing to it
                # over its ~7-reading average, which takes longer than the alarm's clear count
                # (12 readings to 85 % against 10): a step alarmed by the spike channel cleared
                # before the level channel took over, and the model of normal then learned the
                # step. Outside an episode it would turn any 3-reading excursion into a level
                # (suite: 6 nuisance alarms; NAB: 65 more false detections); towards normal (a
                # fault's end) the channel's return is the alarm's clear, left to the hysteresis.
                if self.calm < _RELEARN_AFTER:
                    c = self._clip_p
                    r = e if -c < e < c else (c if e > 0.0 else -c)
                    if (r if r > 0.0 else -r) > (m_level if m_level > 0.0 else -m_level):
                        self.m_level = r
                    if serving:
                        c = self._clip_s
                        r = e_s if -c < e_s < c else (c if e_s > 0.0 else -c)
                        if (r if r > 0.0 else -r) > abs(self.m_level_s):
                            self.m_level_s = r
            else:
                self.f_out = out
                learned = ecf = cf if e_f > 0.0 else -cf
                self.f_level = f_pred + self.f_alpha * ecf
                if self.f_beta:
                    self.f_trend += self.f_beta * ecf
        if i_sl and learned is not None:  # the predictor's move to its next prediction (see _slope_constants)
            g = self.g_slope
            g += _LAMBDA_SLOPE * (self.f_alpha * learned + self.f_trend - g)
            self.g_slope = g
            self.m_slope = g - self.r_slope - self.t_slope
        # The model of normal: a part stops learning when a channel that watches it reaches its
        # threshold, and resumes after _RELEARN_AFTER readings with those channels below
        # learn_below: the level, by every channel but drift; the scales, spreads, repeat
        # length, range and tails, by every channel. Readings that merely look unusual are
        # learned: freezing on them turned the large natural moves of fast-moving series into
        # alarms (the frozen model stays behind). The level is not frozen by the drift channel,
        # so it keeps following a slow wander; a fault drifting faster than it follows shows in
        # the level channel.
        calm_before = self.calm
        was_calm = calm_before >= _RELEARN_AFTER
        if score < lb:
            calm_level = self.calm_level = self.calm_level + 1
            calm = self.calm = calm_before + 1
        elif (s_spike >= 1.0 or s_level >= 1.0 or s_range >= 1.0 or s_var >= 1.0 or s_stuck >= 1.0 or s_short >= 1.0 or s_burst >= 1.0
              or s_rail >= 1.0):
            calm_level = self.calm_level = calm = self.calm = 0
        elif self.calm_level < _RELEARN_AFTER and (s_spike >= lb or s_level >= lb or s_range >= lb or s_var >= lb or s_stuck >= lb
                                                   or s_short >= lb or s_burst >= lb or s_rail >= lb):
            calm_level = self.calm_level = calm = self.calm = 0
        else:
            calm_level = self.calm_level = self.calm_level + 1
            if s_drift >= 1.0 or (not was_calm and s_drift >= lb):
                calm = self.calm = 0
            else:
                calm = self.calm = calm_before + 1
        if calm_level >= _RELEARN_AFTER or training:
            # In training, where nothing stops the model of normal from learning, Huber-limited as
            # the predictor: two spikes of 2,000x the level in NAB's ec2_network_in_5abac7
            # training window taught it a trend that put normal 1,000 above every later
            # reading. Scoring, a reading that reaches a threshold stops it learning instead.
            ec = e
            if training:
                c = _CLIP * self._sc
                if not -c < e < c:
                    ec = c if e > 0.0 else -c
            if h:
                # Learning again after a freeze: the forecast is uncertain by f (above), so, as
                # in a Kalman filter, a reading counts at the gain g = f² / (f² + scale²), not at
                # alpha, while g is the larger, and the uncertainty shrinks with each reading
                # learned (P x (1 - gain)). The channels' averages are residuals from the model
                # and move with it. Without this, the band vanished the moment the model learned
                # one reading, and an alarm it had let go was raised again at once (suite: 25
                # nuisance alarms). The trend learns at its own rate: Kalman's cross-term (a
                # trend gain g / h) re-aimed it from one reading's residual (NAB: one more false
                # detection, and nothing gained elsewhere).
                f = 1.2533 * h * self._vtx
                f *= f
                sc = self._sc
                g = f / (f + sc * sc)
                al = self.alpha
                if g > al:
                    self.m_level *= 1.0 - g
                    self.m_drift *= 1.0 - g
                    al = g
                # (ended once the band widens the level's spread by under 0.5 %: what is left of
                # it changes nothing, and the readings after a long freeze stop paying for it)
                u = 0.1 * self._up[0]
                self.horizon = h * (1.0 - al) ** 0.5 if f > u * u else 0.0
                self.level = lin + al * ec
            else:
                self.level = lin + self.alpha * ec
            if self.beta:
                # The trend is where normal is going: it follows a change of course the model's own
                # memory (~1 / alpha readings) can average, not a deviation that outlasts it. While
                # the level channel stays beyond its normal (its 98 % quantile) for longer than that,
                # the trend stands still and the level follows at alpha alone, so a ramp that stays
                # under the thresholds keeps a residual that grows, rather than teaching the trend
                # its slope (suite seed 2: a ramp on a quantised wander read every 5 minutes was
                # raised only by its jump back). Shorter excursions teach it as before: the first
                # readings of a fault taught SKAB's temperatures the turn their recovery took, and
                # the trend stopped from the first reading beyond normal held those alarms longer
                # (FAR 12.31 -> 15.48 %). docs/detectors.md, "The boiling frog".
                aml = m_level if m_level > 0.0 else -m_level
                if aml <= self._kp[0] or training:
                    self.t_out = 0
                    self.trend += self.beta * ec
                else:
                    k = self.t_out = self.t_out + 1
                    if k * self.alpha < 1.0:
                        self.trend += self.beta * ec
            if dg:
                self.day_c += dg * ec * d_cos
                self.day_s += dg * ec * d_sin
            if i_sl:
                # The slope's reference learns with the model of normal and stands still with it
                # (see _slope_constants); learning again after a freeze, it restarts from the
                # predictor's course: what the slope did during an episode is not its normal.
                if self.shadow_n:
                    self.r_slope, self.t_slope, self.m_slope = self.g_slope, 0.0, 0.0
                else:
                    d = self.m_slope
                    self.r_slope += self.t_slope + _RATE_SLOPE_REF * d
                    self.t_slope += _BETA_SLOPE * d
            self.shadow_n = 0
            if tick:
                if self.first_ts != self.first_ts:
                    self.first_ts = ts  # type: ignore[assignment]
                    self.ds_level = x
                else:
                    self._learn_profile(x, e_s, frac, bin_i, self._ssc, seasonal, training)
                    self._tick = (x - lin, e_s, ts, self.n + 1)  # type: ignore[assignment]
                    # ... and does no part of the slow cycle, which waits for the next calm
                    # reading: paying for both, these readings were the p99 of scoring at one
                    # reading a minute (6.4 us). Where every reading teaches the profile
                    # (_prof_k 1: a reading every 3 minutes or slower) the cycle cannot wait.
                    # Elsewhere the slow statistics and tails learn on (k - 1) / k of calm readings,
                    # so their memory in readings is k / (k - 1) longer: 1.5x at one reading a
                    # minute, 1.004x at one a second (weighting each update as much more instead
                    # made thresholds jumpier: more nuisance alarms at one a minute).
                    waits = self._prof_k > 1
        else:
            # Not normal: the model of normal stays where it was (its trend runs on); the
            # readings feed only the shadow, which a rebaseline adopts.
            if not dg:
                self.level = lin
            # (With a daily sinusoid the trend does not run on: over a third of a day it takes
            # up what the sinusoid's fit missed, a local slope that a 300-reading freeze carried
            # on: 2.9 noise widths off the curve at a stuck sensor's release, against 1.3 without
            # it, and 4 more nuisance alarms after faults' ends over the suite's seeds 0-3.)
            self.horizon += 1.0
            if bin_i < 0:
                pv = self._profile_at(ts) if timed else 0.0  # type: ignore[arg-type]
            n = self.shadow_n + 1
            self.shadow_n = n
            xd = x - pred + lin  # (less the daily sinusoid: the shadow is a level under it)
            if n == 1:
                self.shadow, self.s_shadow = xd, x - pv
            else:
                w = 1.0 / n if n < _SHADOW_MEMORY else 1.0 / _SHADOW_MEMORY
                self.shadow += (xd - self.shadow) * w
                self.s_shadow += (x - pv - self.s_shadow) * w
        if was_calm or calm >= _RELEARN_AFTER:
            # The learned range: every reading of normal operation, and the first reading of each
            # anomalous episode as far as episodes are routine for the series, as the tails learn
            # from it (_learn_episode). From calm readings only, the range stayed the bulk of a
            # spiky series, and each of its ordinary excursions alarmed; taken in whole, a rare
            # spike's reading put an identical spike 1,500 readings later back in range, and it
            # rested on a spike threshold the spikes before it had raised (suite seed 0,
            # quantised/spike/s0.05/dt1/r0: the third scored 0.99). A rare extreme, seen once
            # and alarmed, is not yet what the series does.
            if x < self.lo or x > self.hi:
                self._widen_range(x, 1.0 if training or calm >= _RELEARN_AFTER else self._routine(calm_before))
        if ended_run and ended_run > self.run_max and calm >= _RELEARN_AFTER and not training:
            self.run_max = ended_run  # a run of repeats that ended as normal behaviour
            self._limits()
        if score < lb and s_drift <= 0.0:
            high_run = self.high_run = 0
        else:
            high_run = self.high_run = self.high_run + 1
        if (calm >= _RELEARN_AFTER and high_run < _RELEARN_AFTER) or training:
            # The slow statistics stop learning, too, while readings stay near a threshold or the
            # drift channel stays above its own normal (_RELEARN_AFTER in a row): a deviation held
            # just under the alarm, or a ramp still on its way there, would otherwise teach them,
            # over its length, that it is noise (a ramp of 30 u raised the level and drift
            # thresholds 3x before it reached them, and was alarmed only when it ended).
            k = self.n = self.n + 1
            if training:
                self._learn_slow(x, e_f, e, dx, True)
                if tick:
                    self._learn_slow_seasonal(x - lin, e_s, ts, k, True, 1.0)  # type: ignore[arg-type]
            elif not waits:
                phase = self.s_phase + 1
                if phase == _SLOW_EVERY:
                    phase = 0
                self.s_phase = phase
                if phase == 0:
                    self._learn_slow(x, e_f, e, dx, False)
                elif phase == 1:
                    self.f_ek = e_f  # (the predictor's error, for the pair phase 2 makes)
                    if s_spike > 0.0:  # past the spike tail's quantile: its shape learns (see _learn_shape)
                        self._learn_shape(z)
                    if serving:
                        self._learn_slow_seasonal(x - lin, e_s, ts, k, False, _SLOW_EVERY)  # type: ignore[arg-type]
                    elif self._tick is not None:  # in the background: from its latest tick, once
                        te, tes, tts, tn = self._tick
                        self._tick = None
                        pk = self._prof_k
                        self._learn_slow_seasonal(te, tes, tts, tn, False, pk if pk > _SLOW_EVERY else _SLOW_EVERY)
                else:  # the tails learn from every reading of normal operation ...
                    if phase == 2:
                        if self._r_on:
                            # The predictor's error paired with the one before (see _rechoose_rate;
                            # both calm, so within the spike channel's learn_below: no clip needed).
                            self.f_rc += self.f_ek * e_f
                            self.f_rv += e_f * e_f
                            nr = self.f_rn = self.f_rn + 1
                            if not nr & 63:
                                self._rechoose_rate()
                        self._learn_level_tails(z, m_level, self.m_level_s, _EXCESS_CLIP, _SLOW_EVERY)
                    else:
                        self._learn_drift_tails(m_drift, self.m_drift_s, d_fast, _EXCESS_CLIP, _SLOW_EVERY)
                        if s_spike > 0.0:  # (as in phase 1)
                            self._learn_shape(z)
            elif s_spike > 0.0:  # (a reading that taught the daily profile and waits: as in phase 1)
                self._learn_shape(z)
        elif was_calm and not training and calm < _RELEARN_AFTER:
            # ... and from the first reading of each anomalous episode, as far as episodes are
            # routine for this series: the rest of an episode (a lasting fault) teaches nothing.
            self._learn_episode(z, d_fast, bin_i, calm_before)
        elif self.pending is not None:
            self._learn_pending()
        if s_back >= 1.0 and was_calm and calm >= _RELEARN_AFTER and not training:
            self._learn_back_episode(calm_before)
        if bc > self._o_b and bc > self.b_hold:
            # The count's evidence is that of an episode still going on (see _BURST_GAP): the
            # score is held at learn_below, the alarm's hold level by default (alarms.hold_ratio
            # 0.7); only the alarm reads it: nothing above learns or freezes on it, and below the
            # threshold it raises nothing. The alarm's quiet readings count from its end.
            h = lb * self.threshold
            if score < h:
                score = h
        return score if score > s_anchor else s_anchor

    def score_one(self, x: float, ts: float | None = None) -> float:
        """Score one reading (the Detector protocol's name): ``_step``. Interpreted, this is
        ``_step`` itself (bound after the class: a wrapper's frame was ~1 % of a reading); a class
        compiled by mypyc takes no such alias (see native.py), and the call costs ~nothing there."""
        return self._step(x, ts)

    def _set_states(self, states: tuple[float, ...]) -> None:
        """Score as a status or mode signal with these states (robust_states.py), or, for (), as a
        measurement."""
        self.states = states
        if states:
            self.gap_s = math.inf

    def _profile_at(self, ts: float) -> float:
        """The daily profile's value at ``ts`` (interpolated, shifted)."""
        ph = (ts % _PERIOD_S) * _BINS_PER_S
        i = int(ph)
        if i >= _BINS:
            i = _BINS - 1
        prof = self.prof
        pv = prof[i]
        return pv + (ph - i) * (prof[i + 1 if i + 1 < _BINS else 0] - pv) - self.prof_shift

    def _learn_profile(self, x: float, e_s: float, frac: float, bin_i: int, s_scale: float, seasonal: bool, training: bool) -> None:
        """The daily profile learns from a calm reading (one in _prof_k, weighing as many): the
        bin nearest this time of day follows the deseasonalised reading, each forgetting over
        ~_PROFILE_DAYS of its visits, and the level under it moves as slowly. Where the profile
        serves, a reading it does not expect teaches it a tenth as much: a bin learns fast, and
        would take in a step that has not yet alarmed. Each bin also learns how far its
        readings are from it, on its first day (base) and after (dev): see _step."""
        k = self._prof_k
        c = _CLIP * s_scale if training else 1e300
        ds_level = self.ds_level = self.ds_level + k * self._a_ds * (e_s if -c < e_s < c else (c if e_s > 0.0 else -c))
        r = x - ds_level + self.prof_shift  # in the bins' own (unshifted) terms
        prof, seen, w_min = self.prof, self.seen, self._w_min
        g = 0.1 if seasonal and (e_s if e_s > 0.0 else -e_s) > _EXPECTED * s_scale else 1.0
        b = bin_i if frac < 0.5 else (bin_i + 1 if bin_i + 1 < _BINS else 0)  # the nearest bin
        n = seen[b] + k
        seen[b] = n
        if n == k:
            self.unseen -= 1
        w = k / n if n * w_min < 1.0 else k * w_min
        if w > 1.0:
            w = 1.0
        pb = prof[b]
        delta = r - pb
        if n > k:
            after = n - self._day_n  # visits after the first day
            a = delta if delta > 0.0 else -delta
            if a > 10.0 * s_scale:  # one reading counts at most 10 scales
                a = 10.0 * s_scale
            if after <= 0:
                base_ = self.base
                a = (a - base_[b]) * k / (n - k)
                base_[b] += a
                self.base_sum += a
            else:
                wd = k / after if after * w_min < 1.0 else k * w_min
                dev = self.dev
                dv = dev[b]
                dev[b] = dv + (a - dv) * (wd if wd < 1.0 else 1.0)
            if not -c < delta < c:  # in training, Huber-limited once the bin has a value
                delta = c if delta > 0.0 else -c
        delta *= g * w
        prof[b] = pb + delta
        self.prof_sum += delta

    def _learn_slow(self, x: float, e_f: float, e: float, dx: float, training: bool) -> None:
        """The slow statistics, on every _SLOW_EVERY-th calm reading (each step that much
        larger): the scales, the channels' spreads, the normal first difference, the range, the
        quantum, the reading interval and the comparison of the two models of normal. Slowly
        (~500 readings; ~100 in training) and Huber-limited: a drift or a noise burst must not
        teach the model that its residuals are noise before the channels see it."""
        rate = 0.01 if training else _RATE_SLOW
        # (each statistic read once into a local, written once: this is a quarter of calm readings)
        s = self.f_scale
        a = 1.2533 * (e_f if e_f > 0.0 else -e_f)
        self.f_scale = s + rate * ((a if a < _CLIP * s else _CLIP * s) - s)
        s = self.scale
        a = 1.2533 * (e if e > 0.0 else -e)
        self.scale = s + rate * ((a if a < _CLIP * s else _CLIP * s) - s)
        s, a = self.v_level, self.m_level
        if a < 0.0:
            a = -a
        self.v_level = s + rate * ((a if a < _CLIP * s else _CLIP * s) - s)
        s, a = self.v_drift, self.m_drift
        if a < 0.0:
            a = -a
        self.v_drift = s + rate * ((a if a < _CLIP * s else _CLIP * s) - s)
        s, a = self.v_short, self.m_short
        if a < 0.0:
            a = -a
        self.v_short = s + rate * ((a if a < _CLIP * s else _CLIP * s) - s)
        if self._i_sh and not training:  # (the gates first: scoring's common case, the channel off)
            # The short-term level's tail, from every reading of normal operation (as the other
            # tails, in turn; here, since this part of the cycle is the cheapest: p99 cost).
            # (_short_tail, a being |m_short|, with _short_unit inlined: where the channel is on,
            # this part is scoring's p99)
            f, v = self._fsc, self.v_short
            self._tail(SHORT, a / (1.2533 * (v if v > _V_SHORT_MIN * f else _V_SHORT_MIN * f)), _EXCESS_CLIP, _SLOW_EVERY)
        if self._i_bk and not training:
            # The spike judged from both sides: its tail, likewise (its value judges the reading
            # before this one, calm too: learning needs _RELEARN_AFTER calm readings in a row).
            t, o = self._tail(BACK, self._zbk, _EXCESS_CLIP, _SLOW_EVERY)
            self._o_bk, self._j_bk = o, 1.0 / (t - o)
        if self._i_sl or training:
            # The slope's spread and tail, likewise (its spread from the fit on, where it is on).
            s, a = self.v_slope, self.m_slope
            if a < 0.0:
                a = -a
            v = self.v_slope = s + rate * ((a if a < _CLIP * s else _CLIP * s) - s)
            if not training:
                w = self._sw_half * self._fsc  # (_slope_unit, inlined likewise)
                self._tail(SLOPE, a / (1.2533 * (v if v > w else w)), _EXCESS_CLIP, _SLOW_EVERY, self._xr)
        # The trend's variability over the model's memory (~1 / alpha readings): how far a frozen
        # model's forecast may be trusted (see _step). Huber-limited as the spreads; a model
        # stored before it has 0, which stays 0 (no band, as it was) until its next fit.
        tr, ref = self.trend, self.t_ref
        ref += (self.alpha if training else self.alpha * _SLOW_EVERY) * (tr - ref)
        self.t_ref = ref
        a = tr - ref
        if a < 0.0:
            a = -a
        s = self.v_trend
        self.v_trend = s + rate * ((a if a < _CLIP * s or training else _CLIP * s) - s)
        # The same clip as the variance channel's recent estimate: both are means of the same
        # clipped statistic, so their ratio is 1 in normal operation by construction (a tighter
        # clip here biased it above 1 on signals whose steps are mostly 0 and sometimes a quantum).
        cap = self._var_cap  # (_VAR_CLIP x d_norm: _refresh_plain follows every change of d_norm)
        s = self.d_norm_m
        s += (0.005 if training else _RATE_DNORM) * ((dx if dx < cap else cap) - s)
        if s < _ABS_FLOOR:  # a dead-flat signal (a stopped machine reading 0.0) decayed it to subnormals: 1 / d_norm was inf
            s = _ABS_FLOOR
        self.d_norm_m = s
        h = self.d_hold  # (a fall faster than its long memory follows is held, see _learn_long; 0 in training)
        if s < h:
            s = h
        if s < self._qfloor and (self.jumps or self.coarse):
            # A signal cannot show noise finer than its resolution: how often it steps by one
            # quantum depends on where its level sits between two quanta (SKAB's flow jumps
            # 32 <-> 33 twice as often at 32.45 as at 32.2), not on its noise. A level on the
            # boundary between two quanta flips on every other reading, E|dx| = q / 2, whatever
            # its noise below the quantum: a normal that learned less (a level that sat mid-quantum
            # for a while) called that flipping "variance up" (a wander rounded to 4 and 8 noise
            # widths, scripts/quantum_probe.py). Where the quantum is not coarser than the noise
            # (coarse_lattice), an E|dx| below q / 2 is the noise's (a count near zero: NAB's
            # Twitter_volume_PFE, whose bursts the floor hid).
            s = self._qfloor
        elif s < _ABS_FLOOR:  # (see d_norm_m above; the fit's window can leave it below the floor)
            s = _ABS_FLOOR
        self.d_norm = s
        if not self.jumps and 0.0 < dx and (dx < self.quantum or self.quantum == 0.0):
            self.quantum = dx
            self._limits()
        if not training:
            c = self.l_n = self.l_n + 1
            if c == _LONG_EVERY:
                self._learn_long()
        self._refresh_plain()

    def _learn_long(self) -> None:
        """The normal E|dx|'s long memory, every _LONG_EVERY slow updates: it follows the
        learned one (``d_norm_m``, ~200 readings) over ~2,000 readings, the order of an
        acceptance (``alarms.accept_min_readings``), and holds ``d_norm`` at no less than itself
        / the variance channel's normal (its 98 % quantile of recent / normal E|dx|, ~1.25).

        A noise that falls is a fault (a transmitter frozen with a dither, a filter switched in,
        a reading clipped at a rail) until an acceptance says it is normal; a rise is scored by
        the variance channel, whose alarm freezes what it would teach. On a quantised signal the
        quiet side cannot see a fall (its quiet shows as repeats, or as steps finer than the
        quantum it knows), nothing scored, and d_norm learned the quiet over ~200 readings:
        when the normal noise came back it was "variance up: noise 1.9x its normal" (unseen
        suite seed 0: 12 nuisance alarms after 300 quiet readings). Held, a fall of the learned
        E|dx| within the variance channel's own normal is learned as before (the noise's own
        wander: held at the long memory itself, NAB lost 0.3 / 0.5 and gained quiet-side false
        alarms on series whose noise comes and goes); beyond it, only as its long memory
        follows, so the normal noise's return scores at most the variance channel's normal, and
        the quiet side, measured against the held normal, scores the quiet as it goes on."""
        self.l_n = 0
        m = self.d_norm_m
        lm = self.d_norm_l
        lm = self.d_norm_l = lm + _RATE_LONG * (m - lm)
        o = self._o_v  # (_set_hold, inlined: one scales' part in 32 runs this, and sets scoring's p99)
        h = self.d_hold = lm / o if o > 1.0 else lm
        s = m if m > h else h
        if s < self._qfloor and (self.jumps or self.coarse):  # (the resolution's floor, see _learn_slow)
            s = self._qfloor
        elif s < _ABS_FLOOR:
            s = _ABS_FLOOR
        self.d_norm = s

    def _set_hold(self) -> float:
        """What the long memory holds d_norm at (see _learn_long): itself / the variance
        channel's normal ratio (at most itself)."""
        o = self._o_v
        h = self.d_hold = self.d_norm_l / o if o > 1.0 else self.d_norm_l
        return h

    def _rechoose_rate(self) -> None:
        """The predictor's rate re-chosen as the series shows more of itself (a slow predictor,
        level only: ``f_alpha`` <= ``_SLOW``, where the fit's 500-reading window may not have shown
        a wander with a longer correlation time, and the predictor then lags it, its scale and so
        every spike's z off by as much). Its one-step errors are white at the series' best gain
        and correlated where it lags (robust_stats.rechoose_rate): each slow cycle pairs the
        error of its phase-2 reading with its phase-1 reading's (the two adjacent unless a reading
        that did not learn came between: then a lag-2 pair, whose correlation has the same sign
        and is smaller, so it errs towards keeping the rate). Every 64 pairs (one calm reading in
        ~256: below the 1 % that p99 sees), the rate may switch among the slow candidates (the
        channels that a predictor faster than the model of normal turns on stay as the fit set
        them); the model of normal keeps its own rate."""
        v = self.f_rv
        if v <= 0.0:
            return
        pick = rechoose_rate(self.f_alpha, self.f_rc / v, self.f_rn, _SLOW_RATES)
        if pick is not None:
            # The scale is left to follow the new errors at its own rate (~500 readings), from
            # above: moved at once by the spread the local level model predicts, it fell to 0.62x
            # on a bursty NAB series (ec2_disk_write_bytes: 4 more false detections), whose
            # errors are no gaussian ARMA; left to learn, NAB is unchanged and the suite's
            # third spikes are caught as well.
            self.f_alpha = pick
            self._rate_constants()
            self.f_rc = self.f_rv = 0.0
            self.f_rn = 0

    def _learn_slow_seasonal(self, e: float, e_s: float, ts: float, n_at: int, training: bool, weight: float) -> None:
        """The seasonal half of the slow statistics (on its own phase of _SLOW_EVERY), from the
        residuals ``e`` (plain, without its daily sinusoid: the profile takes over from the line
        as it did before the sinusoid, see _step) and ``e_s`` (seasonal) of a reading at ``ts``, the ``n_at``-th
        learned from, weighing ``weight`` readings.

        The profile serves only once it has seen a whole day and every bin; from then on its
        scale, its channels' spreads and the two models' errors are learned as running means
        first (so they settle in a few dozen updates rather than carry what the half-learned
        profile looked like), then slowly. The better model serves the channels once both
        errors have settled."""
        if self.first_ts != self.first_ts:
            return
        last, last_n = self.last_ts, self.last_n
        self.last_ts, self.last_n = ts, n_at
        if last == last and ts > last and n_at > last_n:
            gap = (ts - last) / (n_at - last_n)  # the mean interval since the last update
            dt = self.dt
            if gap > 4.0 * dt > 0.0:
                # A silence (a sensor offline for 8 hours) says the readings stopped, not that they
                # come less often: learned whole, it took a minute's interval to 288 s and moved
                # every rate set from it; a lasting change of rate is still followed, 15 % an update.
                gap = 4.0 * dt
            new = self.dt = gap if dt == 0.0 else dt + 0.05 * (gap - dt)
            self.gap_s = _gap_after(new)
            if not 0.999 * dt < new < 1.001 * dt:  # the rates follow it when it moves
                self._set_rates()
        unseen = self.unseen
        if not unseen:
            # Keep the profile's mean at zero and the level under it carrying the level: else
            # an offset left in the bins from the first day fades only as slowly as they learn.
            # O(1): the bins' sum is kept as they learn, and the shift applied where they are read.
            mean = self.prof_sum / _BINS - self.prof_shift
            self.prof_shift += mean
            self.ds_level += mean
        s = self.s_scale
        self._trust_tol = s + self.base_sum / _BINS
        n = self.s_n
        if not n and (unseen > 0 or ts - self.first_ts < _PERIOD_S):
            return  # not a whole day seen yet: the profile cannot serve
        n = self.s_n = n + 1
        base_rate = 0.01 if training else 0.002 * weight
        rate = 1.0 / n if n * base_rate < 1.0 else base_rate
        early = n < _SETTLED  # (each statistic read once into a local, written once: p99 cost)
        a = 1.2533 * (e_s if e_s > 0.0 else -e_s)
        self.s_scale = s + rate * ((a if a < _CLIP * s or early else _CLIP * s) - s)
        s, a = self.v_level_s, self.m_level_s
        if a < 0.0:
            a = -a
        self.v_level_s = s + rate * ((a if a < _CLIP * s or early else _CLIP * s) - s)
        s, a = self.v_drift_s, self.m_drift_s
        if a < 0.0:
            a = -a
        self.v_drift_s = s + rate * ((a if a < _CLIP * s or early else _CLIP * s) - s)
        s = self.err_plain
        err_plain = self.err_plain = s + rate * ((e if e > 0.0 else -e) - s)
        s = self.err_seas
        err_seas = self.err_seas = s + rate * ((e_s if e_s > 0.0 else -e_s) - s)
        if self.seasonal:
            if err_seas > _SEASONAL_OFF * err_plain:
                self.seasonal = False
        elif not early and err_seas < _SEASONAL_ON * err_plain:
            self.seasonal = True
        self._refresh_seasonal()

    def _learn_episode(self, z: float, d_fast: float, bin_i: int, gap: int) -> None:
        """The first reading of an anomalous episode teaches the tails in proportion to how routine episodes are for this series (their rate over the last
        ~_EP_MEMORY readings, against one per _ROUTINE readings). A rare one (three identical
        spikes 700 readings apart) barely moves them, so each of them raises its own alarm; on
        a series that spikes every hundred readings (NAB's tweet volumes, CPU and disk
        counters) the spikes are its tail, and they are learned at full weight and nearly
        unclipped, as a calibration on its own history should. Clipped at 20 x the tail's mean
        whatever their rate, those series raised dozens of alarms on their routine spikes.
        (All the channels learn from it: the variance channel's values after a routine spike
        are part of its normal, and the readings after it are in the episode. Learning only
        the channels it raised: SKAB FAR 11.6 -> 12.8 %, NAB 56.5 -> 55.9.)"""
        routine, clip = self._count_episode(gap)
        # Learned on the next two readings of the episode (which learn nothing else), half each:
        # no one reading pays for all six tails (the p99 cost of a series that alarms often).
        self.pending = [z, self.m_level, self.m_drift, self.m_level_s, self.m_drift_s, d_fast, float(bin_i), clip,
                        _SLOW_EVERY * routine, 0.0, self.m_short, self.m_slope, self._zbk]

    def _widen_range(self, x: float, w: float) -> None:
        """Take ``x``, beyond the learned range, into it at weight ``w`` (1: all the way)."""
        if w < 1.0:
            x = self.lo + w * (x - self.lo) if x < self.lo else self.hi + w * (x - self.hi)
        if x < self.lo:
            self.lo = x
        else:
            self.hi = x

    def _episode_rate(self, gap: int) -> float:
        """The rate of anomalous episodes over ~_EP_MEMORY readings, counting one starting now,
        ``gap`` readings after the last one (not stored: see _count_episode)."""
        return self.ep_rate * math.exp(-gap / _EP_MEMORY) + 1.0 / _EP_MEMORY

    def _routine(self, gap: int) -> float:
        """How routine an episode starting now is for this series (0-1): its rate of episodes
        against one per _ROUTINE readings."""
        routine = self._episode_rate(gap) * _ROUTINE
        return routine if routine < 1.0 else 1.0

    def _count_episode(self, gap: int) -> tuple[float, float]:
        """Count an episode in the rate of episodes (``gap`` readings since the last one); return
        how routine episodes are (0-1) and the clip its first reading's excess gets."""
        routine = self._routine(gap)
        self.ep_rate = self._episode_rate(gap)
        return routine, _EPISODE_CLIP / (1.0 - routine if routine < 0.95 else 0.05)

    def _learn_back_episode(self, gap: int) -> None:
        """An alarm of the spike judged from both sides alone (no channel reached learn_below on
        the reading it judges, nor on this one): an episode, counted in the rate of episodes,
        whose first reading teaches its own tail as _learn_episode's do. It freezes nothing: it
        judges the reading before, which was learned from as a calm reading (Huber-limited), and
        the reading in hand is not the spike; freezing on it moved the slow statistics' phase and
        once held a variance alarm for 2,000 readings (the unseen kinds' quieter noise)."""
        routine, clip = self._count_episode(gap)
        t, o = self._tail(BACK, self._zbk, clip, _SLOW_EVERY * routine)
        self._o_bk, self._j_bk = o, 1.0 / (t - o)

    def _learn_pending(self) -> None:
        """One half of an episode's first reading, for the tails (see _learn_episode)."""
        p = self.pending
        assert p is not None  # (called only while an episode's first reading is pending)
        if p[9]:  # (p[6], the reading's bin, is kept in the state only)
            self._learn_drift_tails(p[2], p[4], p[5], p[7], p[8])
            if self._i_sh:
                self._short_tail(p[10], p[7], p[8])
                self._short_constants()
            if self._i_sl:
                self._tail(SLOPE, abs(p[11]) / self._slope_unit(), p[7], p[8])
                self._slope_constants()
            self.pending = None
        else:
            self._learn_level_tails(p[0], p[1], p[3], p[7], p[8])
            p[9] = 1.0
            if self._i_bk:
                # (on the first of the two readings, the spike judged from both sides has judged
                # the episode's first reading: its tail learns from that, or from its own value on
                # that reading when it raised the episode itself, the larger)
                zb = self._zbk
                t, o = self._tail(BACK, zb if zb > p[12] else p[12], p[7], p[8])
                self._o_bk, self._j_bk = o, 1.0 / (t - o)

    def _learn_level_tails(self, z: float, m_level: float, m_level_s: float, clip: float, weight: float) -> None:
        """The calibrators: each channel's standardised tail, and so its threshold, in two parts,
        one per update (to spread the cost). This one (the slow cycle's tails 1): the spike's,
        the burst count's, the level's and the profile's level's; _learn_drift_tails the rest.
        (The short-term level's tail learns in the scales' phase, see _learn_slow: the cheapest
        part of the cycle.) The cached constants of the channels whose tails moved follow at
        once, the profile's where it serves (else at its next slow update)."""
        level = self.level
        floor = 1e-9 * (level if level > 0.0 else -level)  # self._floor(), inlined (p99 cost)
        if floor < self._qfloor:
            floor = self._qfloor
        scale = self.scale if self.scale > floor else floor
        v = self.v_level
        if v < _V_LEVEL_MIN * scale:
            v = _V_LEVEL_MIN * scale
        t, o = self._tail(SPIKE, z, clip, weight)
        if self._g_sp:  # a tail heavier than exponential (see _learn_shape): _set_threshold knows its shape
            self._set_threshold(SPIKE, self.cal_q[SPIKE], self.cal_m[SPIKE])  # (and sets its constants)
        else:
            # (_spike_constants(t, o), inlined: the tails' phases make much of scoring's p99)
            w = t - o
            self._o_sp, self._i_sp = o, 1.0 / w
            b_z = self._b_z = o + _BURST_AT * w
            self._b_at = b_z + self._qfloor / self._fsc
        t, o = self._tail(BURST, self.burst, clip, weight, self._xr)
        self._o_b, self._i_b = o, 1.0 / (t - o)
        self._b_cap = _BURST_CAP * t
        self._tail(LEVEL, (m_level if m_level > 0.0 else -m_level) / (1.2533 * v), clip, weight)
        self._level_constants()  # (the plain model's level half: only it moved, see _level_constants)
        if self.s_n >= _SETTLED:
            s_scale = self.s_scale if self.s_scale > floor else floor
            v = self.v_level_s
            if v < _V_LEVEL_MIN * s_scale:
                v = _V_LEVEL_MIN * s_scale
            self._tail(LEVEL_S, (m_level_s if m_level_s > 0.0 else -m_level_s) / (1.2533 * v), clip, weight)
            if self.seasonal:
                # (in whole: the seasonal model's units and the quantum's floor can change without
                # its refresh, which this one then catches up on, as it always did)
                self._constants(True)

    def _learn_drift_tails(self, m_drift: float, m_drift_s: float, d_fast: float, clip: float, weight: float) -> None:
        """The other part of the calibrators (tails 2, see _learn_level_tails): the drift's, the
        variance channel's and its quiet side's, and the profile's drift's."""
        level = self.level
        floor = 1e-9 * (level if level > 0.0 else -level)  # (as in _learn_level_tails)
        if floor < self._qfloor:
            floor = self._qfloor
        scale = self.scale if self.scale > floor else floor
        v = self.v_drift
        if v < _V_DRIFT_MIN * scale:
            v = _V_DRIFT_MIN * scale
        self._tail(DRIFT, (m_drift if m_drift > 0.0 else -m_drift) / (1.2533 * v), clip, weight, self._xr)
        t, o = self._tail(VAR, d_fast / self.d_norm - 1.0, clip, weight)
        self._o_v, self._i_v = 1.0 + o, 1.0 / (t - o)
        q, f = self.d_low, self._q2  # (_quiet_value(), inlined likewise)
        q = self.d_norm / (q if q > f else f) - 1.0
        t, o = self._tail(QUIET, q if q > 0.0 else 0.0, clip, weight)
        self._o_q, self._i_q = 1.0 + o, 1.0 / (t - o)
        self._drift_constants()  # (the plain model's drift half, see _level_constants)
        if self.s_n >= _SETTLED:
            s_scale = self.s_scale if self.s_scale > floor else floor
            v = self.v_drift_s
            if v < _V_DRIFT_MIN * s_scale:
                v = _V_DRIFT_MIN * s_scale
            self._tail(DRIFT_S, (m_drift_s if m_drift_s > 0.0 else -m_drift_s) / (1.2533 * v), clip, weight, self._xr)
            if self.seasonal:
                self._constants(True)  # (in whole, see _learn_level_tails)

    def _learn_shape(self, z: float) -> None:
        """The spike tail's shape, from a calm reading's standardised residual ``z`` past its
        quantile. Only those come here (~1 in 100 readings), and only from the calm readings
        that teach the daily profile and wait, or do the slow cycle's phases 1 and 3 (not the
        scales' nor the tails' own, which set the p99 of scoring): three in four calm readings
        at one a minute, three times the evidence the tail itself learns from.

        Every calibrated threshold extrapolates an exponential tail from the 98 % quantile,
        which for heavy-tailed noise (Student-t) is far too close: it raised at ~1.3e-4 a
        reading for good. A generalised Pareto tail of shape xi puts
        (1 + 6 (2^xi - 1))^(-1/xi) of its exceedances beyond 6 median excesses (1/64 at
        xi = 0); a share is free of the clip the tail's mean excess applies (4 x it), falls
        within where calm learning stops (0.7 of the threshold, ~7 mean excesses), and counted
        it has a binomial standard error (see _SHAPE_DISPERSION). The shape used is the one at
        the share's lower bound (_set_shape, every _SHAPE_EVERY exceedances; 0 until then: a
        gaussian or exponential tail keeps the exponential threshold), and the threshold's
        multiplier follows only where it moved (_shape_gain, a pow)."""
        y = z - self.cal_q[SPIKE]
        if y <= 0.0:  # (the channel's normal is below its quantile where that is above half its threshold)
            return
        m = self.cal_m[SPIKE]
        k = self.sh_k
        med = self.sh_med if k else _LN2 * m  # (from an exponential tail's median excess)
        self.sh_k = k + 1.0
        if k >= _SHAPE_WARM:
            # The share beyond _SHAPE_AT medians is counted once the median has settled: a
            # median a few exceedances old is noisy, and the share beyond a multiple of a noisy
            # median reads high (on gaussian noise, 3x over the first 100).
            n = self.sh_n = self.sh_n * _SHAPE_KEEP + 1.0
            f = self.sh_f * _SHAPE_KEEP
            f3 = self.sh_f3 * _SHAPE_KEEP
            if y > _SHAPE_MID * med:
                f3 += 1.0
                if y > _SHAPE_AT * med:
                    f += 1.0
            self.sh_f, self.sh_f3 = f, f3
            if k % _SHAPE_EVERY == 0.0:
                self._set_shape(n, f, f3)
        # The median: a stochastic approximation, steps of m / (k + 5) at first, _SHAPE_MED x m
        # once settled.
        step = m / (k + 5.0) if k < _SHAPE_SETTLE else _SHAPE_MED * m
        med += step if y > med else -step
        self.sh_med = med if med > 0.01 * m else 0.01 * m

    def _set_shape(self, n: float, f: float, f3: float) -> None:
        """The shape used, from ``f`` of ``n`` counted exceedances beyond _SHAPE_AT medians and
        ``f3`` beyond _SHAPE_MID (see _learn_shape), and the spike threshold's multiplier where
        it moved (_shape_gain).

        A heavy share is a Pareto tail's only where the excesses thin out beyond it as one does:
        of those past 3 medians, a tail of shape 0.5 (the largest used) has 0.41 past 6
        (_SHAPE_THIN; an exponential tail 1/8, t(3) 0.34). Noise with routine glitches of one
        size (1 % of readings at 8 noise widths, learned as normal) has nearly all of them past
        both, and extrapolated as a Pareto tail its threshold went from 49 to 839 noise scales:
        where the count past 6 medians is above _SHAPE_THIN of the count past 3 by more than
        its noise, the tail is not a Pareto tail and keeps the exponential threshold."""
        xi = 0.0
        if n >= _SHAPE_MIN:
            p = f / n
            xi = _shape_of(p - _SHAPE_Z * math.sqrt(_SHAPE_DISPERSION * p * (1.0 - p) / n))
            if xi > 0.0 and f > _SHAPE_THIN * f3 + _SHAPE_Z * math.sqrt(_SHAPE_DISPERSION * _SHAPE_THIN * (1.0 - _SHAPE_THIN) * f3):
                xi = 0.0
        if xi - self.sh_xi >= _SHAPE_TOL or self.sh_xi - xi >= _SHAPE_TOL or (xi == 0.0) != (self.sh_xi == 0.0):
            self.sh_xi = xi
            self._g_sp = _shape_gain(xi, self._k) if xi > 0.0 else 0.0

    def _quiet_value(self) -> float:
        """The quiet side's statistic (see _step): normal / recent E|dx| - 1, at least 0."""
        q = self.d_low
        f = self._q2
        v = self.d_norm / (q if q > f else f) - 1.0
        return v if v > 0.0 else 0.0

    def _short_tail(self, m_short: float, clip: float, weight: float) -> None:
        """The short-term level's tail, from ``m_short`` standardised by its spread (its cached
        constants follow in _short_constants)."""
        self._tail(SHORT, (m_short if m_short > 0.0 else -m_short) / self._short_unit(), clip, weight)

    def _tail(self, c: int, zc: float, clip: float, weight: float, runs: list[int] | None = None) -> tuple[float, float]:
        """One channel's tail: the quantile tracker, the mean excess above it, the threshold and
        normal (as _set_threshold, inlined: this runs on every other calm reading), returned.
        ``runs``: the drift channels' count of updates in a row above the quantile."""
        q = self.cal_q
        qc = q[c]
        mc = self.cal_m[c]
        if zc > qc:
            if runs is not None:
                # The drift channel remembers ~50 readings, ~12 of its tail's updates: updates in
                # a row above the quantile are one excursion, not independent exceedances. The
                # r-th in a row counts 1/r: a slow excursion (a ramp on its way, the tail of a
                # step) no longer teaches the tail as if it were dozens of them.
                r = runs[c] = runs[c] + 1
                weight = weight / r
            excess = zc - qc
            cap = clip * mc
            mc += _M_STEP * weight * ((excess if excess < cap else cap) - mc)
            self.cal_m[c] = mc
            qc += weight * _Q_STEP * _TAIL_ODDS * mc
        else:
            if runs is not None:
                runs[c] = 0
            qc -= weight * _Q_STEP * mc
        q[c] = qc
        t = qc + self._k * mc
        if t < _FLOORS[c]:
            t = _FLOORS[c]
        o = qc if qc < 0.5 * t else 0.5 * t
        self.thr[c] = t
        self.off[c] = o
        return t, o

    # ---- explaining, accepting ----------------------------------------------------------------
    def explain(self, x: float) -> Explanation:
        """Why the reading ``x``, just scored, scored as it did."""
        if self.states:
            return state_explain(self.states, x)
        (e_f, f_pred, f_scale, m_level, m_drift, d_fast, run, seasonal, s_spike, s_level, s_drift, s_var, s_stuck, s_range,
         s_short, m_short, s_slope, m_slope, s_burst, burst, s_back, r_back, x_back) = self._last
        thr = self.thr
        lo, hi = f_pred - thr[SPIKE] * f_scale, f_pred + thr[SPIKE] * f_scale
        z = abs(e_f) / f_scale
        normal = "the daily profile" if seasonal else "normal"
        chans = [
            (s_spike, base.SPIKE, e_f, f"{z:.1f} noise scales from the expected {f_pred:.6g}"),
            (s_level, base.LEVEL_SHIFT, m_level, f"the level is {m_level:+.4g} off {normal}"),
            (s_drift, base.DRIFT, m_drift, f"moving away from {normal}: {m_drift:+.4g} over ~50 readings"),
            (s_var, base.VARIANCE, d_fast - self.d_norm, f"noise {d_fast / self.d_norm:.2g}x its normal"),
            (s_stuck, base.STUCK, 0.0, f"the same value for {int(run)} readings (longest normal run {self.run_max}"
             + (f", longest stay within a quantum {self.hold_n})" if self.hold_n > self.run_max else ")")),
            (s_range, base.OUT_OF_RANGE, e_f, f"outside the learned range {self.lo:.6g} to {self.hi:.6g}"),
            (s_short, base.LEVEL_SHIFT, m_short, f"the level jumped {m_short:+.4g} from the recent readings' course"),
            (s_slope, base.DRIFT, m_slope, f"the recent readings' course departs from {normal}'s by {m_slope:+.4g} a reading, over ~50 readings"),
            (s_burst, base.SPIKE, e_f, f"{burst:.1f} readings past {_BURST_AT:.0%} of the spike threshold over ~{_BURST_MEMORY:.0f} (raises at {self.thr[BURST]:.1f})"),
            (s_back, base.SPIKE, r_back, f"the reading before, {x_back:.6g}, stood {abs(r_back) * self._i_bk:.1f} noise scales from "
                                         f"what the readings on both sides of it expected ({x_back - r_back:.6g})"),
        ]
        rc, rv = (self.rail_ch, self.rail_hi) if self.rail_ch >= self.rail_cl else (self.rail_cl, self.rail_lo)
        s_rail = (rc - self.rail_o) * self._i_rail
        chans.append((s_rail, base.STUCK, 0.0, f"{rv:.6g}, the recent {'highest' if rv == self.rail_hi else 'lowest'} reading, came back "
                                              f"{rc:.1f} times over ~{rail.MEMORY:.0f} readings (raises at {self.rail_lim:.0f}): a railed transmitter?"))
        s_lat = (self.lat_c - self.lat_o) * self._i_lat
        if s_lat >= 1.0 and max(ch[0] for ch in chans) < 1.0 and abs(self.a_x - self.a_level) * self.a_inv < 1.0:
            # Steps off the window's lattice say only that the value is no longer the
            # transmitter's own: where another channel says what the value does (a ramp, a step,
            # noise), that is the diagnosis; alone, the noise is what moved (quieter or not).
            lq = self.quantum if self.quantum < self.lat_q else 0.5 * self.lat_q
            return Explanation(base.VARIANCE, "up" if d_fast > self.d_norm else "down", lo, hi,
                               f"{self.lat_c:.1f} of the last ~{lattice.MEMORY:.0f} readings stepped by less than the resolution {self.lat_q:.4g} "
                               f"the training window showed (steps of {lq:.2g}; raises at {self.lat_lim:.0f}): a filtered or substituted value?")
        # A reading repeated to the stuck channel's threshold is stuck, and a spike that reaches
        # its own threshold is a spike, even when another channel scores higher: the most
        # specific diagnosis, and what the operator sees first.
        da = self.a_x - self.a_level  # the anchor's deviation (see _step), and its score
        sa = abs(da) * self.a_inv
        if sa >= 1.0 and sa > max(ch[0] for ch in chans):
            w = 1.0 / self.a_inv
            return Explanation(base.DRIFT, "up" if da > 0 else "down", self.a_level - w, self.a_level + w,
                               f"the level has moved {da:+.4g} from where the fit left normal ({self.a_level:.6g}) over {self.a_t} readings, "
                               f"beyond the {w:.4g} its own wander reaches in that time")
        if chans[4][0] >= 1.0:
            _, kind, sign, detail = chans[4]
        elif chans[0][0] >= 1.0:
            _, kind, sign, detail = chans[0]
        elif chans[9][0] >= 1.0:
            _, kind, sign, detail = chans[9]
            # (the range the reading before was expected in, judged from both sides)
            w = thr[BACK] / self._i_bk if self._i_bk else 0.0
            lo, hi = x_back - r_back - w, x_back - r_back + w
        else:
            _, kind, sign, detail = max(chans, key=lambda ch: ch[0])
        direction = None if kind == base.STUCK else ("up" if sign > 0 else "down")
        return Explanation(kind, direction, lo, hi, detail)

    def rebaseline(self, moving: bool = False) -> None:
        """Accept what the recent readings show as the new normal (the shadow kept while the
        model of normal stood still). The level left and the level accepted are both
        remembered as operating levels (see _remember_level). ``moving``: the move an
        operator accepted going on (alarm_follow.py): the level it reaches replaces the one
        accepted last, and the levels it passed through are not remembered (each was, and a
        step back to one of them after the ramp was taken as a move to an accepted level)."""
        if self.states:  # a status signal accepts the last value as one more state
            self.states = accept_state(self.states, self.prev)
            return
        left = self.level
        if self.shadow_n:
            # The shadow is the episode's mean until it is _SHADOW_MEMORY readings old, its onset
            # included: accepted ~30 readings into a ramped move (a weekday's load returning over
            # two hours) it was still halfway up the ramp, and the level accepted was raised
            # again at once. Where the live level (the predictor's, as the anchor's below) has
            # moved beyond one reading's band from that mean, it is what the readings show now.
            corr = 0.0
            if self.shadow_n < _SHADOW_MEMORY:
                corr = self.f_level - (self._day_y if self.day_g else 0.0) - self.shadow
                band = self._level_band()
                if -band < corr < band:
                    corr = 0.0
            self.level, self.ds_level = self.shadow + corr, self.s_shadow + corr
        else:
            self.level = self.ds_level = self.prev
            self.level -= self._day_y if self.day_g else 0.0
        self._restart_episode()
        if self.lat_c:  # steps off the window's lattice accepted: its resolution is unknown until the next fit
            self.lat_q = self.lat_c = 0.0
        if self._quiet_value() >= self.thr[QUIET]:  # a quieter noise accepted as normal
            self.d_norm = max(self.d_low, self._qfloor)
        else:
            self.d_norm = max(self.d_norm, self.d_fast)
        self.d_norm_m = self.d_norm_l = self.d_norm  # (accepted: what it has learned and remembers)
        self.run_max = max(self.run_max, self.run)
        self._limits()
        # The cached constants follow the new normal at once: left to the next slow cycle, the
        # reading after an acceptance was scored with the old 1 / d_norm, and a noise accepted
        # as normal raised its alarm again at once ("noise 1x its normal, 2.9 x threshold"),
        # held for good, since a model in alarm never reaches the slow cycle that would refresh them.
        self._refresh_plain()
        self._refresh_seasonal()
        self._set_hold()
        self.lo = min(self.lo, self.level)
        self.hi = max(self.hi, self.level)
        # The anchor moves only here (and at a fit): to the live level, its bound starting again.
        # The live level is the short-term predictor's, which jumps to a new level in
        # _REACQUIRE readings, not the anchor's own a_x: that follows readings Huber-limited
        # (clip_p a reading), so a rebaseline within ~100 readings of a large step (an operator
        # accepting a new setpoint) anchored it halfway up the step; a_x walked on to the level
        # and re-raised it as a drift or level shift ~40 readings later, at each rebaseline
        # again (plant_normals_probe.py --only setpoints --accept-after 30: 160 raises over four
        # seeds). Its sinusoid becomes the model's, in whose terms the predictor's level is read.
        self.a_c, self.a_s = self.day_c, self.day_s
        self.a_level = self.a_x = self.f_level - (self._day_y if self.day_g else 0.0)
        self.a_t = 0
        self._anchor_bound()
        if moving:
            if self.levels:
                self.levels.pop(0)
        else:
            self._remember_level(left)
        self._remember_level(self.level)

    def _restart_episode(self) -> None:
        """A new normal (a rebaseline, a move to an operating level): the model of normal's
        trend, what the channels held of deviations from the old one, the burst and rail
        counts and the slope's estimate start again, and learning resumes at once.

        The slope's reference keeps the course it had before the episode (it stood still
        through it): what is accepted is a level, and the model of normal's trend restarts at
        0. Restarted from the predictor's course, a rebaseline halfway through a ramped move
        (a load ramped over two hours) made the ramp's course the reference, and the ramp's
        end raised "drift" the other way (plant_normals_probe.py --only weekly --accept-after
        30). The estimate restarts at the reference, and the channel is silent for its
        memory, as after a jump (see _step)."""
        self.trend = 0.0
        self.m_level = self.m_drift = self.m_level_s = self.m_drift_s = 0.0
        self.m_short = self.f_jump = self.m_slope = self.burst = self.b_hold = self.b_last = self.b_ev = self.b_xe = self.b_w = 0.0
        self.b_run = 0
        self.rail_ch = self.rail_cl = 0.0
        self.g_slope = self.r_slope + self.t_slope
        self.slope_from = self.n + _SLOPE_QUIET
        self.calm = self.calm_level = _RELEARN_AFTER
        self.shadow_n = self.t_out = 0
        self.horizon = 0.0

    def _level_band(self) -> float:
        """How far a reading may be from an operating level and still be normal there, and how
        far apart two levels must be to be two: where the spike channel scores learn_below (the
        alarm's hold level), at most the channels' threshold floor (_GAUSS: 4 noise scales), in
        reading units. (The floor, where a window's moves between levels taught the spike tail
        that jumps of their size are routine: its band would span the levels.)"""
        f = self._fsc
        band = (self._o_sp + self.learn_below / self._i_sp) * f
        return band if band < _GAUSS[2] * f else _GAUSS[2] * f

    def _remember_level(self, level: float) -> None:
        """Keep ``level`` as an operating level the operator accepted as normal: a controller
        moved between setpoints, a machine between duties. A rebaseline says both the level it
        leaves and the one it accepts are normal; without this memory each later move between
        them was a new alarm, its return another one (scripts/plant_normals_probe.py --only
        setpoints --accept-after 30). At most _LEVELS, the least recently used dropped; one
        within the band of another replaces it."""
        band = self._level_band()
        kept = [v for v in self.levels if not -band < v - level < band]
        self.levels = [level, *kept][:_LEVELS]

    def _to_operating_level(self, e: float) -> bool:
        """A reading ``e`` from the plain model's expectation, beyond the spike threshold: if it
        is within the spike channel's band of an accepted operating level, nearer it than the
        level it left, and the two levels are further apart than that band, move the model of
        normal there (True); the reading is then scored against it. Levels are told apart only
        where one reading tells them apart: on a series whose one-step scatter spans its levels
        (a bursty count: NAB's ec2_network_in_5abac7 after its acceptance time; a window that
        held the setpoints already) no move is made. Only rebaselines add levels, so a series
        that never accepted anything pays nothing and alarms as before; a fault that lands on
        an accepted level (a dropout to an idle level accepted as normal) is not alarmed, which
        is what accepting that level said."""
        band = self._level_band()
        level = self.level
        for i, m in enumerate(self.levels):
            d = m - level
            r = e - d  # the reading from the operating level
            ar, ad = (r if r > 0.0 else -r), (d if d > 0.0 else -d)
            if ar < band <= ad and 2.0 * ar < ad:
                del self.levels[i]
                self.levels.insert(0, m)
                self._shift_normal(d)
                # Said, not alarmed: readings at an accepted level are normal, and an operator
                # who sees the series sit at 30 after a fault there must be able to read why.
                source = "its training window held or a rebaseline accepted" if self.lv_win else "a rebaseline accepted"
                self.notice = (f"moved from {level:.6g} to {m:.6g}, an operating level {source}: readings there "
                               "are normal; a level never accepted is alarmed")
                return True
        return False

    def _shift_normal(self, d: float) -> None:
        """Move the model of normal by ``d`` (to an accepted operating level), as if the series
        had always run there: every level (the plain and seasonal models', the predictor's, the
        anchor's, the last reading and its forecast) shifts; what the channels held of the old
        level's deviations starts again, as at a rebaseline; calibrations stay (the noise is
        the same at either level)."""
        self.level += d
        self.ds_level += d
        self.f_level += d
        self.prev += d
        self.fp_prev += d
        self.a_level += d
        self.a_x += d
        self._restart_episode()
        self.f_trend = 0.0
        self.f_out = 0
        self.slope_from = self.n + _SLOPE_QUIET  # (as after the predictor's own jump)

    def band(self) -> tuple[float, float] | None:
        if self.states:
            return (self.states[0], self.states[-1])
        pred = self.f_level + self.f_trend
        w = self.thr[SPIKE] * max(self.f_scale, self._floor()) * self.threshold
        return (pred - w, pred + w)

    # ---- state -------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params: dict[str, Any] = {"rate": self.rate, "learn_below": self.learn_below, "threshold": self.threshold}
        params.update({k: getattr(self, k) for k in _FLOATS + _INTS})
        params.update({k: None if getattr(self, k) != getattr(self, k) else getattr(self, k) for k in _MAYBE_NAN})
        params.update({"cal_q": list(self.cal_q), "cal_m": list(self.cal_m), "seasonal": self.seasonal,
                       "pending": None if self.pending is None else list(self.pending),
                       "tick": None if self._tick is None else list(self._tick), "xrun": list(self._xr),
                       "states": list(self.states), "levels": list(self.levels)})
        return params, {"profile": np.asarray(self.prof, dtype=np.float64), "seen": np.asarray(self.seen, dtype=np.int64),
                        "base": np.asarray(self.base, dtype=np.float64), "dev": np.asarray(self.dev, dtype=np.float64)}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RobustDetector:
        d = cls(rate=params["rate"], learn_below=params["learn_below"], threshold=params["threshold"])
        for k in _FLOATS:
            value = float(params[k] if k in params or k not in _ADDED else _ADDED[k])
            if not math.isfinite(value):
                raise ValueError(f"state {k}={value!r} is not finite")
            setattr(d, k, value)
        for k in _INTS:
            setattr(d, k, int(params[k] if k in params or k not in _ADDED else _ADDED[k]))
        if "burst_off" not in params:  # a model stored before the burst count: off where it jumps, as at fit
            d.burst_off = d.jumps
        if "s_phase" not in params:  # a model stored before it: the cycle was n's
            d.s_phase = d.n % _SLOW_EVERY
        if "d_quick" not in params:  # a model stored before the quiet side: its recent E|dx| is the ~33-reading one
            d.d_quick = d.d_low = d.d_fast
        if "t_ref" not in params:  # a model stored before it: the trend's average starts at the trend
            d.t_ref = d.trend
        if "g_slope" not in params:  # a model stored before the slope: its course starts at the trend,
            d.g_slope = d.r_slope = d.trend  # its spread at white noise's (as at fit; from 0 it could not grow)
            d.v_slope = _slope_white(d.f_alpha) * d.f_scale
        for k in _MAYBE_NAN:
            setattr(d, k, math.nan if params[k] is None else float(params[k]))
        d.seasonal = bool(params["seasonal"])
        cq, cm = [float(x) for x in params["cal_q"]], [float(x) for x in params["cal_m"]]
        if len(cq) == len(cm) and SHORT <= len(cq) < _N_CAL:  # stored before the short-term level, the slope or quiet: their priors
            cq.extend(p[0] for p in _PRIOR[len(cq):])
            cm.extend(p[1] for p in _PRIOR[len(cm):])
        if len(cq) != _N_CAL or len(cm) != _N_CAL or not all(map(math.isfinite, cq + cm)):
            raise ValueError(f"state cal_q / cal_m: expected {_N_CAL} finite numbers each")
        d.cal_q, d.cal_m = cq, cm
        if not (0.0 <= d.sh_xi <= _SHAPE_MAX and 0.0 <= d.sh_f <= d.sh_f3 <= d.sh_n and d.sh_med >= 0.0 and d.sh_k >= 0.0):
            raise ValueError("state sh_xi / sh_f / sh_f3 / sh_n / sh_med: a shape in [0, 0.5], counts 0 <= f <= f3 <= n, a median >= 0")
        d._g_sp = _shape_gain(d.sh_xi, d._k) if d.sh_xi > 0.0 else 0.0
        pending = params.get("pending")  # added in round 2 of issue 13
        if pending is not None:
            pend = [float(v) for v in pending]
            if len(pend) in (10, 11, 12):  # stored before the short-term level, the slope or the spike judged from both sides
                pend.extend([0.0] * (13 - len(pend)))
            if len(pend) != 13 or not all(map(math.isfinite, pend)):
                raise ValueError("state pending: expected 13 finite numbers or null")
            d.pending = pend
        tick = params.get("tick")  # added in round 2 of issue 13
        if tick is not None:
            tk = [float(v) for v in tick]
            if len(tk) != 4 or not all(map(math.isfinite, tk)):
                raise ValueError("state tick: expected 4 finite numbers or null")
            d._tick = (tk[0], tk[1], tk[2], int(tk[3]))
        xrun = params.get("xrun")  # added in round 2 of issue 13
        if xrun is not None:
            if SHORT <= len(xrun) < _N_CAL:  # stored before the short-term level, the slope or quiet
                xrun = [*xrun, *[0] * (_N_CAL - len(xrun))]
            if len(xrun) != _N_CAL or not all(isinstance(v, int) and 0 <= v < 2**31 for v in xrun):
                raise ValueError(f"state xrun: expected {_N_CAL} counts or null")
            d._xr = [int(v) for v in xrun]
        prof, seen = np.asarray(arrays["profile"], dtype=np.float64), np.asarray(arrays["seen"], dtype=np.int64)
        if prof.shape != (_BINS,) or seen.shape != (_BINS,) or not np.isfinite(prof).all():
            raise ValueError(f"state arrays: expected a finite profile and counts of {_BINS} bins")
        d.prof, d.seen = array("d", prof.tolist()), array("q", seen.tolist())
        # Each bin's deviations (added in round 2 of issue 13): a model stored before has none;
        # its bins take the same, so they serve as they did.
        for key in ("base", "dev"):
            dev = np.asarray(arrays[key], dtype=np.float64) if key in arrays else np.zeros(_BINS)
            if dev.shape != (_BINS,) or not np.isfinite(dev).all():
                raise ValueError(f"state arrays: expected a finite {key} of {_BINS} bins")
            setattr(d, key, array("d", dev.tolist()))
        d._trust_tol = d.s_scale + d.base_sum / _BINS
        d._rate_constants()
        d._update_thresholds()
        if "d_norm_m" not in params:  # a model stored before the long memory: it starts here
            d.d_norm_m = d.d_norm_l = d.d_norm
            d._set_hold()
        d._limits()
        d._set_rates()
        d._refresh_plain()
        d._refresh_seasonal()
        d._r_on = d.f_alpha <= _SLOW and not d.f_beta
        d.gap_s = _gap_after(d.dt)
        levels = params.get("levels", [])  # (a model stored before them has none)
        if not (isinstance(levels, list) and len(levels) <= _LEVELS and all(isinstance(v, int | float) and math.isfinite(v) for v in levels)):
            raise ValueError(f"state levels: expected at most {_LEVELS} finite numbers")
        d.levels = [float(v) for v in levels]
        d._set_states(stored_states(params))  # (as in fit)
        return d


if isinstance(_slope_white, types.FunctionType):
    # Interpreted, score_one is _step itself: no wrapper frame (see score_one). Compiled (native.py:
    # a compiled function is a builtin), this line does not run: mypyc's classes take no
    # attribute assigned later.
    RobustDetector.score_one = RobustDetector._step  # type: ignore[method-assign]
