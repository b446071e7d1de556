"""A model of normal that a fault cannot rewrite: a robust streaming baseline, six fault channels."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edge_agent.detectors import base
from edge_agent.detectors.base import Explanation

_N_CAL = 4  # calibrated channels: spike, level, drift, variance
_ALPHAS = (0.003, 0.01, 0.03, 0.1, 0.3)  # candidate rates of the short-term predictor
_SLOW = 0.01  # the model of normal follows at most this fast (~100 readings)
_LAMBDA_LEVEL = 0.15  # the level channel: EWMA of residuals, ~7 readings
_LAMBDA_DRIFT = 0.02  # the drift channel: EWMA of residuals, ~50 readings
_LAMBDA_VAR = 0.03  # the variance channel: EWMA of |first difference|
_VAR_CLIP = 4.0  # one difference counts at most 4 x its normal size (a spike is not noise)
_TAIL_P = 0.98  # calibrators track this quantile and the mean excess above it
_Q_STEP = 0.001
_M_STEP = 0.01  # ~100 exceedances (~5,000 readings) of memory for the tail's scale
_EXCESS_CLIP = 4.0  # one excess counts at most 4 x the tail's mean (a robust mean)
_EPISODE_CLIP = 20.0  # ... and an anomalous episode's first reading at most 20 x
_PRIOR_EXCESS = 10.0  # pseudo-exceedances of the gaussian prior at fit
# Per channel: (prior quantile, prior mean excess, floor of the threshold), in channel units,
# for independent gaussian residuals. The floors: never alarm on what independent gaussian
# noise produces once in ~30,000 readings, however quiet the training window was.
_PRIOR = (
    (2.33, 0.38, 4.0),  # spike: |e| / scale
    (0.66, 0.108, 4.0 * 0.285),  # level: |EWMA_0.15(e)| / scale (sd 0.285)
    (0.234, 0.038, 1.0),  # drift: |EWMA_0.02(e)| / scale (sd 0.1005); floor: a whole scale
    (0.19, 0.04, 0.5),  # variance: EWMA(|dx|) / its normal value - 1
)
_STUCK_MIN = 10  # a value repeated this often is "stuck" on a series that never repeats one
_STUCK_FACTOR = 3.0  # ... else this many times the longest repeat seen in normal readings
_RANGE_MARGIN = 0.2  # out of range: beyond the learned range by 20 % of its width ...
_RANGE_Z = 5.0  # ... and 5 noise scales from the prediction
_RELEARN_AFTER = 10  # after an anomalous reading, learning resumes after this many calm ones
_LEVEL_CLIP = 4.0  # a residual counts at most 4 scales towards the level and drift channels
_CLIP = 2.5  # a residual counts at most 2.5 scales towards a scale or the predictor (Huber)


class RobustDetector:
    """The agent's default: six fault channels over a model of normal that faults cannot teach.

    Two baselines per series:

    * a **short-term predictor** (Holt's linear smoothing, its rate chosen at fit as the
      steadiest that predicts the training window about as well as the best): what the next
      reading should be. It always learns, each residual clipped at 2.5 scales (Huber), so a
      spike barely moves it and a step is followed within a few readings;
    * the **model of normal** (a level with a trend, Brown's double smoothing, at most as
      fast as ``_SLOW``): where the series belongs. It stops learning when a channel
      reaches its threshold and resumes after ``_RELEARN_AFTER`` readings below
      ``learn_below``: a lasting fault stays a deviation from it, so its alarm stays raised
      while the fault lasts; ``rebaseline()`` accepts a lasting change as the new normal.

    Also learned from normal readings only: the noise scale of each baseline (floored at half
    the smallest step the series has taken, so a quantised signal is not over-sensitive), the
    normal size of a first difference, the longest run of a repeated value, the value range.

    Channels, each divided by its own threshold (``score = max``, 1.0 = anomalous):

    * ``spike``: |reading - short-term prediction| / its scale;
    * ``level_shift``: |EWMA of the model-of-normal residual| (~7 readings) / its scale;
    * ``drift``: the same over ~50 readings: a steady move away, faster than normal trends;
    * ``variance``: EWMA of |first difference| (each clipped at 4x normal) / its normal - 1;
    * ``stuck``: readings repeating one value / max(10, 3 x the longest normal run);
    * ``out_of_range``: beyond the learned range by 20 % of its width and 5 scales from the
      short-term prediction.

    The first four thresholds are calibrated on the series' own history of each channel (a
    quantile tracker at 98 % plus the mean excess above it, extrapolated as an exponential
    tail to ``rate`` per reading), floored at what independent gaussian noise reaches once
    in ~30,000 readings. Work and memory per reading are O(1).

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

    def __init__(self, rate: float = 1e-6, learn_below: float = 0.7, threshold: float = 1.0) -> None:
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
        self._k = math.log((1.0 - _TAIL_P) / self.rate)
        # short-term predictor
        self.f_alpha, self.f_beta = 0.03, 0.0
        self.f_level = self.f_trend = 0.0
        self.f_scale = 1.0
        # model of normal
        self.alpha, self.beta = 0.01, 0.0
        self.level = self.trend = 0.0
        self.scale = 1.0
        # channels and the rest of what normal looks like
        self.quantum = 0.0  # smallest nonzero |step| seen
        self.prev = 0.0
        self.m_level = self.m_drift = 0.0
        self.d_norm = self.d_fast = 1.0  # normal and recent E|dx| (clipped)
        self.run = self.run_max = 0
        self.lo = self.hi = 0.0
        self.cal_q = [p[0] for p in _PRIOR]
        self.cal_m = [p[1] for p in _PRIOR]
        self.thr = [0.0] * _N_CAL
        self.shadow, self.shadow_n = 0.0, 0  # where the readings went while normal stood still
        self.calm = _RELEARN_AFTER  # consecutive readings with every channel below learn_below
        self.calm_level = _RELEARN_AFTER  # ... with every channel but drift below it
        self._last: tuple[float, ...] = (0.0,) * 8  # the last reading's figures, for explain()
        self._update_thresholds()

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, values: np.ndarray) -> dict[str, Any]:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1 or v.shape[0] < 10 or not np.isfinite(v).all():
            raise ValueError("fit needs at least 10 finite values")
        d = np.abs(np.diff(v))
        nz = d[d > 0]
        self.quantum = float(nz.min()) if nz.size else 0.0
        self.f_alpha, self.f_beta = _choose_smoothing(v)
        self.alpha = min(self.f_alpha, _SLOW)
        self.beta = self.alpha * self.alpha / 4.0  # Brown: a trend as steady as the level
        start = float(np.median(v[:20]))
        self.f_level = self.level = start
        self.f_trend = self.trend = 0.0
        noise = max(_mad_scale(np.diff(v)) / math.sqrt(2.0), self._floor())
        self.f_scale = self.scale = noise
        self.d_norm = self.d_fast = max(float(np.mean(d)), self._floor())
        self.prev = float(v[0])
        self.lo, self.hi = float(np.min(v)), float(np.max(v))
        self.run, self.run_max = 0, _longest_run(v)
        self.m_level = self.m_drift = 0.0
        self.shadow, self.shadow_n = 0.0, 0
        self.calm = self.calm_level = _RELEARN_AFTER
        # One pass learning from every reading, collecting each channel's values once the
        # baselines have settled, to calibrate its threshold.
        collected: list[list[float]] = [[] for _ in range(_N_CAL)]
        warm = min(100, v.shape[0] // 4)
        step = self._step
        for i, x in enumerate(v.tolist()):
            step(x, True, collected if i >= warm else None)
        for c in range(_N_CAL):
            self.cal_q[c], self.cal_m[c] = _calibrate(np.asarray(collected[c]), *_PRIOR[c][:2], iid=c == 0)
        self._update_thresholds()
        self.run_max = max(self.run_max, self.run)
        return {
            "level": self.level, "trend": self.trend, "scale": self.scale, "alpha": self.alpha,
            "predictor_alpha": self.f_alpha, "predictor_trend": self.f_beta > 0, "predictor_scale": self.f_scale,
            "quantum": self.quantum, "run_max": self.run_max, "min": self.lo, "max": self.hi,
            "thresholds": {"spike": self.thr[0], "level": self.thr[1], "drift": self.thr[2], "variance": self.thr[3]},
        }

    def _floor(self) -> float:
        # Half the smallest step: a quantised signal cannot show noise finer than its quantum.
        # A tiny relative floor keeps a dead-flat signal finite without hiding any real change.
        return max(0.5 * self.quantum, 1e-9 * abs(self.level), 1e-300)

    def _update_thresholds(self) -> None:
        k = self._k
        for c in range(_N_CAL):
            t = self.cal_q[c] + k * self.cal_m[c]
            floor = _PRIOR[c][2]
            self.thr[c] = t if t > floor else floor

    def _stuck_limit(self) -> float:
        lim = _STUCK_FACTOR * self.run_max
        return lim if lim > _STUCK_MIN else float(_STUCK_MIN)

    # ---- scoring ---------------------------------------------------------------------------
    def score_one(self, x: float) -> float:
        return self._step(float(x), False, None)

    def _step(self, x: float, training: bool, collect: list[list[float]] | None) -> float:
        floor = self._floor()
        thr = self.thr
        # short-term predictor: the spike channel
        f_pred = self.f_level + self.f_trend
        e_f = x - f_pred
        f_scale = self.f_scale if self.f_scale > floor else floor
        z = abs(e_f) / f_scale
        # model of normal: the level and drift channels
        pred = self.level + self.trend
        e = x - pred
        scale = self.scale if self.scale > floor else floor
        c = _LEVEL_CLIP * scale  # a level is what persists: one reading moves it at most this much
        ec = e if -c < e < c else (c if e > 0 else -c)
        m_level = self.m_level + _LAMBDA_LEVEL * (ec - self.m_level)
        m_drift = self.m_drift + _LAMBDA_DRIFT * (ec - self.m_drift)
        # noise and repeats
        dx = abs(x - self.prev)
        d_norm = self.d_norm
        cap = _VAR_CLIP * d_norm
        d_fast = self.d_fast + _LAMBDA_VAR * ((dx if dx < cap else cap) - self.d_fast)
        run = self.run + 1 if dx == 0.0 else 0
        s_spike = z / thr[0]
        s_level = abs(m_level) / scale / thr[1]
        s_drift = abs(m_drift) / scale / thr[2]
        s_var = (d_fast / d_norm - 1.0) / thr[3] if d_norm > 0.0 else 0.0
        s_stuck = run / self._stuck_limit() if self.quantum > 0.0 else 0.0
        s_range = 0.0
        if z >= _RANGE_Z:
            margin = _RANGE_MARGIN * (self.hi - self.lo)
            if x > self.hi + margin or x < self.lo - margin:
                s_range = z / _RANGE_Z
        score = max(s_spike, s_level, s_drift, s_var, s_stuck, s_range)
        self._last = (e_f, f_pred, f_scale, e, m_level, m_drift, d_fast, float(run))
        if collect is not None:
            collect[0].append(z)
            collect[1].append(abs(m_level) / scale)
            collect[2].append(abs(m_drift) / scale)
            collect[3].append(max(0.0, d_fast / d_norm - 1.0) if d_norm > 0.0 else 0.0)
        ended_run = self.run if run == 0 else 0
        self.m_level, self.m_drift, self.d_fast, self.run, self.prev = m_level, m_drift, d_fast, run, x
        # The short-term predictor always learns, Huber-limited.
        cf = _CLIP * f_scale
        ecf = e_f if -cf < e_f < cf else (cf if e_f > 0 else -cf)
        self.f_level = f_pred + self.f_alpha * ecf
        self.f_trend += self.f_beta * ecf
        # What the model of normal may learn. A part stops learning when a channel that
        # watches it reaches its threshold, and resumes after _RELEARN_AFTER readings with
        # those channels below learn_below (the alarm's own hysteresis): the level, by every
        # channel but drift; the scales, repeat length and range, by every channel. Readings
        # that merely look unusual are learned: freezing on them turned the large natural
        # moves of fast-moving series into alarms (the frozen model stays behind). And the
        # level is not frozen by the drift channel, so it keeps following a slow wander; a
        # fault drift faster than it follows shows up in the level channel.
        lb = self.learn_below
        was_calm = self.calm >= _RELEARN_AFTER
        if s_spike >= 1.0 or s_level >= 1.0 or s_range >= 1.0 or s_var >= 1.0 or s_stuck >= 1.0:
            self.calm_level = self.calm = 0
        elif self.calm_level < _RELEARN_AFTER and (s_spike >= lb or s_level >= lb or s_range >= lb or s_var >= lb or s_stuck >= lb):
            self.calm_level = self.calm = 0
        else:
            self.calm_level += 1
            if s_drift >= 1.0 or (self.calm < _RELEARN_AFTER and s_drift >= lb):
                self.calm = 0
            else:
                self.calm += 1
        if training:
            self._learn_level(e)
            self._learn_noise(x, e_f, e, dx, ended_run, True)
            return score * self.threshold
        if self.calm_level >= _RELEARN_AFTER:
            self._learn_level(e)
            self.shadow_n = 0
            self.shadow = x
        else:
            # Not normal: the model of normal stays where it was (its trend runs on); the
            # readings feed only the shadow, which a rebaseline adopts.
            self.level = pred
            n = self.shadow_n + 1
            self.shadow_n = n
            self.shadow += (x - self.shadow) * (1.0 / n if n < 50 else 0.02)
        if self.calm >= _RELEARN_AFTER:
            self._learn_noise(x, e_f, e, dx, ended_run, False)
            if score < lb:  # the tails learn from readings well inside them ...
                self._learn_tails(z, m_level, m_drift, d_fast, scale)
        elif was_calm:
            # ... and from the first reading of each anomalous episode, its excess clipped at
            # 4 x the tail's mean: a series whose spikes are routine learns to expect them
            # over a few dozen of them, while a handful of identical spikes each still raise
            # their own alarm; the rest of an episode (a lasting fault) teaches nothing.
            self._learn_tails(z, m_level, m_drift, d_fast, scale, _EPISODE_CLIP)
        return score * self.threshold

    def _learn_level(self, e: float) -> None:
        self.level = self.level + self.trend + self.alpha * e
        self.trend += self.beta * e

    def _learn_noise(self, x: float, e_f: float, e: float, dx: float, ended_run: int, training: bool) -> None:
        # Slowly (~500 readings; ~100 in training), Huber-limited: a drift or a noise burst
        # must not teach the model that its residuals are noise before the channels see it.
        rate = 0.01 if training else 0.002
        a = 1.2533 * abs(e_f)
        cap = _CLIP * self.f_scale
        self.f_scale += rate * ((a if a < cap else cap) - self.f_scale)
        a = 1.2533 * abs(e)
        cap = _CLIP * self.scale
        self.scale += rate * ((a if a < cap else cap) - self.scale)
        if 0.0 < dx and (dx < self.quantum or self.quantum == 0.0):
            self.quantum = dx
        cap = _CLIP * self.d_norm
        self.d_norm += 0.005 * ((dx if dx < cap else cap) - self.d_norm)
        if ended_run > self.run_max and not training:
            self.run_max = ended_run  # a run of repeats that ended as normal behaviour
        if x < self.lo:
            self.lo = x
        elif x > self.hi:
            self.hi = x

    def _learn_tails(self, z: float, m_level: float, m_drift: float, d_fast: float, scale: float, clip: float = _EXCESS_CLIP) -> None:
        """The calibrators: each channel's tail as seen on calm readings."""
        vals = (z, abs(m_level) / scale, abs(m_drift) / scale, max(0.0, d_fast / self.d_norm - 1.0) if self.d_norm > 0 else 0.0)
        q, m = self.cal_q, self.cal_m
        changed = False
        for c in range(_N_CAL):
            zc = vals[c]
            if zc > q[c]:
                excess = zc - q[c]
                cap = clip * m[c]
                m[c] += _M_STEP * ((excess if excess < cap else cap) - m[c])
                q[c] += _Q_STEP * m[c] * _TAIL_P / (1.0 - _TAIL_P)
                changed = True
            else:
                q[c] -= _Q_STEP * m[c]
        if changed:
            self._update_thresholds()

    def score_many(self, xs: np.ndarray) -> np.ndarray:
        # A strict recurrence (each score depends on all earlier readings): the same loop.
        arr = np.asarray(xs, dtype=np.float64)
        out = np.empty(arr.shape[0], dtype=np.float64)
        one = self.score_one
        for i, x in enumerate(arr.tolist()):
            out[i] = one(x)
        return out

    # ---- explaining, accepting ----------------------------------------------------------------
    def explain(self, x: float) -> Explanation:
        """Why the reading ``x``, just scored, scored as it did."""
        e_f, f_pred, f_scale, e, m_level, m_drift, d_fast, run = self._last
        thr = self.thr
        scale = max(self.scale, self._floor())
        lo, hi = f_pred - thr[0] * f_scale, f_pred + thr[0] * f_scale
        z = abs(e_f) / f_scale
        chans = [
            (z / thr[0], base.SPIKE, e_f, f"{z:.1f} noise scales from the expected {f_pred:.6g}"),
            (abs(m_level) / scale / thr[1], base.LEVEL_SHIFT, m_level, f"the level is {m_level:+.4g} off normal"),
            (abs(m_drift) / scale / thr[2], base.DRIFT, m_drift, f"moving away from normal: {m_drift:+.4g} over ~50 readings"),
            ((d_fast / self.d_norm - 1.0) / thr[3] if self.d_norm > 0 else 0.0, base.VARIANCE, 1.0,
             f"noise {d_fast / self.d_norm:.1f}x its normal" if self.d_norm > 0 else "noise up"),
            (run / self._stuck_limit() if self.quantum > 0 else 0.0, base.STUCK, 0.0,
             f"the same value for {int(run)} readings (longest normal run {self.run_max})"),
        ]
        margin = _RANGE_MARGIN * (self.hi - self.lo)
        if z >= _RANGE_Z and (x > self.hi + margin or x < self.lo - margin):
            chans.append((z / _RANGE_Z, base.OUT_OF_RANGE, e_f, f"outside the learned range {self.lo:.6g} to {self.hi:.6g}"))
        # A spike that reaches its own threshold is a spike, even when another channel scores
        # higher: the operator sees the jump first.
        if chans[0][0] >= 1.0:
            ratio, kind, sign, detail = chans[0]
        else:
            ratio, kind, sign, detail = max(chans, key=lambda ch: ch[0])
        direction = None if kind == base.STUCK else ("up" if sign > 0 else "down")
        return Explanation(kind, direction, lo, hi, detail)

    def rebaseline(self) -> None:
        """Accept what the recent readings show as the new normal (the shadow kept while the
        model of normal stood still)."""
        self.level = self.shadow if self.shadow_n else self.prev
        self.trend = 0.0
        self.m_level = self.m_drift = 0.0
        self.d_norm = max(self.d_norm, self.d_fast)
        self.run_max = max(self.run_max, self.run)
        self.calm = self.calm_level = _RELEARN_AFTER
        self.lo = min(self.lo, self.level)
        self.hi = max(self.hi, self.level)
        self.shadow_n = 0

    def band(self) -> tuple[float, float] | None:
        pred = self.f_level + self.f_trend
        w = self.thr[0] * max(self.f_scale, self._floor()) * self.threshold
        return (pred - w, pred + w)

    # ---- state -------------------------------------------------------------------------------
    _STATE_FLOATS = ("f_alpha", "f_beta", "f_level", "f_trend", "f_scale", "alpha", "beta", "level", "trend", "scale",
                     "quantum", "prev", "m_level", "m_drift", "d_norm", "d_fast", "lo", "hi", "shadow")
    _STATE_INTS = ("run", "run_max", "shadow_n", "calm", "calm_level")

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params: dict[str, Any] = {"rate": self.rate, "learn_below": self.learn_below, "threshold": self.threshold}
        params.update({k: getattr(self, k) for k in self._STATE_FLOATS + self._STATE_INTS})
        params.update({"cal_q": list(self.cal_q), "cal_m": list(self.cal_m)})
        return params, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RobustDetector:
        d = cls(rate=params["rate"], learn_below=params["learn_below"], threshold=params["threshold"])
        for k in cls._STATE_FLOATS:
            value = float(params[k])
            if not math.isfinite(value):
                raise ValueError(f"state {k}={value!r} is not finite")
            setattr(d, k, value)
        for k in cls._STATE_INTS:
            setattr(d, k, int(params[k]))
        cq, cm = [float(x) for x in params["cal_q"]], [float(x) for x in params["cal_m"]]
        if len(cq) != _N_CAL or len(cm) != _N_CAL or not all(map(math.isfinite, cq + cm)):
            raise ValueError("state cal_q / cal_m: expected 4 finite numbers each")
        d.cal_q, d.cal_m = cq, cm
        d._update_thresholds()
        return d


def _calibrate(z: np.ndarray, q0: float, m0: float, iid: bool) -> tuple[float, float]:
    """(quantile, mean excess) of a channel's training values, for its tail model.

    The spike channel's values are close to independent: the empirical tail is blended with
    the gaussian prior (``_PRIOR_EXCESS`` pseudo-exceedances). The level, drift and variance
    channels are smoothed, so their values come in correlated runs and a training window
    holds few independent exceedances: there the prior is only a lower bound, and the mean
    excess is raised by its uncertainty, 1 / sqrt(exceedance clusters).
    """
    q_emp = float(np.quantile(z, _TAIL_P))
    over = z > q_emp
    exc = z[over] - q_emp
    n = float(exc.size)
    m_emp = float(exc.mean()) if exc.size else 0.0
    if iid:
        w = _PRIOR_EXCESS
        return max((n * q_emp + w * q0) / (n + w), q_emp), (n * m_emp + w * m0) / (n + w)
    clusters = int(np.count_nonzero(over[1:] & ~over[:-1])) + int(bool(over[0])) if z.size else 0
    inflate = 1.0 + 1.0 / math.sqrt(clusters) if clusters else 2.0
    return max(q_emp, q0), max(m_emp * inflate, m0)


def _mad_scale(x: np.ndarray) -> float:
    if x.size == 0:
        return 0.0
    med = float(np.median(x))
    return 1.4826 * float(np.median(np.abs(x - med)))


def _longest_run(v: np.ndarray) -> int:
    """Longest run of readings equal to the one before, in v."""
    same = np.concatenate(([False], v[1:] == v[:-1]))
    best = cur = 0
    for s in same.tolist():
        cur = cur + 1 if s else 0
        if cur > best:
            best = cur
    return best


def _choose_smoothing(v: np.ndarray) -> tuple[float, float]:
    """(level gain, trend gain): the steadiest baseline whose one-step error on v is within
    3 % of the best. Candidates: a level alone at each rate of ``_ALPHAS``, then the same with
    a trend (Brown's double smoothing: trend gain alpha^2 / 4); fewer moving parts win ties,
    because a trend estimated from noise, extrapolated while the model is frozen during an
    alarm, walks the baseline away from where the signal returns to."""
    candidates = [(a, 0.0) for a in _ALPHAS] + [(a, a * a / 4.0) for a in _ALPHAS]
    xs = v.tolist()
    errs = []
    for a, b in candidates:
        level, trend = xs[0], 0.0
        total = 0.0
        for x in xs[1:]:
            pred = level + trend
            e = x - pred
            total += abs(e)
            level = pred + a * e
            trend += b * e
        errs.append(total)
    best = min(errs)
    for (a, b), err in zip(candidates, errs, strict=True):
        if err <= 1.03 * best:
            return a, b
    return candidates[-1]
