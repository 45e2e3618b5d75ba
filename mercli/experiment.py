"""Experiments: a dataset, a preset and several seeds -> checkpoints, metrics and a results file.

The results file (``results.json``) is what ``mer compare`` reads: per seed the test and
validation metrics, and their mean and standard deviation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mercli.checkpoint import CheckpointMeta
from mercli.config import ModelConfig, Preset
from mercli.features.profile import FeatureProfile

if TYPE_CHECKING:
    from mercli.train import FitResult

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how its text reaches the model."""

    dataset: str  # mosi | mosei | urfunny
    path: Path
    # more label CSVs (transcripts) or `mer prepare` datasets (clips with media) whose train
    # splits are added to a label CSV's; see mercli.data.mixing
    extra_train: tuple[Path, ...] = ()
    # None: the pickle's frozen BERT states, or the backbone a `mer prepare` pickle records
    text_backbone: str | None = None
    # None: the data's default: frozen for `mer prepare` pickles (a few labelled videos are too
    # few to fine-tune BERT on), fine-tuned otherwise
    finetune_text: bool | None = True
    extra_repeat: int = 1  # times the clips of each `mer prepare` extra are seen per epoch
    # auxiliary labelled text, (set name, folder) per set (mercli.data.aux_text): a head of
    # its own each, never mixed into the train split
    aux_text: tuple[tuple[str, Path], ...] = ()

    @property
    def is_text_csv(self) -> bool:
        return _is_csv(self.path)

    @property
    def media_extras(self) -> tuple[Path, ...]:
        """The extra training sets that are `mer prepare` datasets (not label CSVs)."""
        return tuple(p for p in self.extra_train if not _is_csv(p))

    def finetunes_text(self, profile: FeatureProfile | None) -> bool:
        """Whether the text backbone is fine-tuned, for data with this feature profile."""
        if self.finetune_text is not None:
            return self.finetune_text
        return profile is None


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def prepared_backbone(spec: DataSpec, profile: FeatureProfile) -> str:
    """The text backbone whose tokenizer made a prepared pickle's token ids.

    Raises:
        DatasetError: the profile names none, or ``spec`` asks for another one.
    """
    from mercli.data import DatasetError

    recorded = (profile.text and profile.text.extractor) or ""
    if not recorded:
        raise DatasetError(spec.path, "names no text backbone", key="feature_profile")
    if spec.text_backbone and spec.text_backbone != recorded:
        raise DatasetError(
            spec.path,
            f"its token ids come from the tokenizer of {recorded!r}, not {spec.text_backbone!r}; "
            f"leave out --text-backbone, or re-run `mer prepare --text-backbone "
            f"{spec.text_backbone}`",
            key="feature_profile",
        )
    return recorded


def feature_profile(
    spec: DataSpec, model: ModelConfig, data_profile: FeatureProfile | None = None
) -> FeatureProfile:
    """What the checkpoint's inputs were made with, so ``analyze`` can tell whether it can
    reproduce them. CMU's benchmark features (COVAREP, FACET, OpenFace) cannot be made from raw
    video by mer; a pickle from ``mer prepare`` records its own (``data_profile``), which is kept
    with the modalities the model reads."""
    from mercli.features.profile import (
        TEXT_ONLY_PROFILE_NAME,
        AudioProfile,
        TextProfile,
        VisionProfile,
    )

    if data_profile is not None:
        return data_profile.with_modalities(model.modalities)
    text = TextProfile(model.text_backbone or "bert-base-uncased states (MMSA pickle)")
    if spec.is_text_csv:
        return FeatureProfile(TEXT_ONLY_PROFILE_NAME, model.modalities, text=text)
    return FeatureProfile(
        f"cmu-benchmark-{spec.dataset}",
        model.modalities,
        text=text,
        audio=AudioProfile("covarep" if spec.dataset != "urfunny" else "covarep-81"),
        vision=VisionProfile("facet" if spec.dataset == "mosi" else "openface/facet"),
    )


def load_data(spec: DataSpec, log: Callable[[str], None], tune_top_layers: int = 0) -> Any:
    """The :class:`~mercli.data.SplitDatasets` for ``spec``, text prepared for the model.

    Args:
        tune_top_layers: the model tunes the frozen backbone's top layers
            (``ModelConfig.tune_top_layers``): its text states are the lower part's.
    """
    from mercli.data import load_dataset
    from mercli.model.text_backbone import state_layers

    if spec.is_text_csv:
        from mercli.model.text_backbone import DEFAULT_BACKBONE, load_tokenizer

        backbone = spec.text_backbone or DEFAULT_BACKBONE
        tokenizer = load_tokenizer(backbone)
        data = load_dataset(f"{spec.dataset}-text", spec.path, tokenizer=tokenizer)  # type: ignore[arg-type]
        for extra in spec.extra_train:
            if _is_csv(extra):
                more = load_dataset(f"{spec.dataset}-text", extra, tokenizer=tokenizer)  # type: ignore[arg-type]
                data = _with_more_training(data, more)
        frozen = not spec.finetunes_text(None)
        layers = state_layers(backbone, tune_top_layers) if frozen else None
        if frozen:
            from mercli.data.text_states import with_text_states

            data = with_text_states(data, backbone, log=log, layers=layers)
        if spec.media_extras:
            from mercli.data.mixing import (
                load_media_training,
                with_media_training,
                with_states_of,
            )

            extras = [load_media_training(p) for p in spec.media_extras]
            if frozen:  # the clips' states apart: the transcripts' stay cached as they were
                extras = [with_states_of(e, backbone, log=log, layers=layers) for e in extras]
            data = with_media_training(data, extras, backbone, spec.extra_repeat)
        return data
    if spec.extra_train:
        from mercli.data import DatasetError

        raise DatasetError(
            spec.path, "--extra-train adds to a label CSV's train split; --data is not a CSV"
        )
    source = "tokens" if spec.text_backbone else "states"
    data = load_dataset(spec.dataset, spec.path, text_source=source)  # type: ignore[arg-type]
    profile = data.feature_profile
    if profile is None:
        return data
    backbone = prepared_backbone(spec, profile)  # the token ids are this tokenizer's
    if not spec.finetunes_text(profile):
        from mercli.data.text_states import with_text_states
        from mercli.features.profile import max_text_tokens

        layers = state_layers(backbone, tune_top_layers)
        data = with_text_states(data, backbone, max_text_tokens(profile), log=log, layers=layers)
    return data


def _with_more_training(data: Any, more: Any) -> Any:
    from torch.utils.data import ConcatDataset

    return replace(data, train=ConcatDataset([data.train, more.train]))


def model_config_for(
    preset: Preset, spec: DataSpec, info: Any, profile: FeatureProfile | None = None
) -> ModelConfig:
    """The preset's model with the data's widths and the chosen text path.

    Args:
        profile: the data's feature profile (``mer prepare`` pickles, or transcripts mixed with
            their clips): the model reads the preset's modalities that the profile has, text
            through the profile's backbone (a label CSV's: ``spec``'s).
    """
    config = preset.model
    if spec.is_text_csv:
        from mercli.model.text_backbone import DEFAULT_BACKBONE

        # transcripts alone are text only; clips mixed in add the media they hold
        media = profile.modalities if profile is not None else ()
        modalities = ("text", *(m for m in config.modalities if m != "text" and m in media))
        config = replace(
            config, modalities=modalities, text_backbone=spec.text_backbone or DEFAULT_BACKBONE
        )
    elif profile is not None:
        config = replace(
            config,
            modalities=_prepared_modalities(spec, config.modalities, profile),
            text_backbone=prepared_backbone(spec, profile),
        )
    elif spec.text_backbone:
        config = replace(config, text_backbone=spec.text_backbone)
    config = replace(config, finetune_text_backbone=spec.finetunes_text(profile))
    if config.tune_top_layers and (config.text_backbone is None or "text" not in config.modalities):
        raise ValueError("tuning the text backbone's top layers needs text through a backbone")
    info_d_in = {m: d for m, d in info.d_in.items() if m in config.modalities}
    return config.for_dataset(replace(info, d_in=info_d_in))


def _prepared_modalities(
    spec: DataSpec, wanted: tuple[str, ...], profile: FeatureProfile
) -> tuple[str, ...]:
    from mercli.data import DatasetError

    present = profile.modalities
    modalities = tuple(m for m in wanted if m in present)
    if not modalities:
        raise DatasetError(
            spec.path,
            f"holds {', '.join(present)} features, none of the modalities asked for "
            f"({', '.join(wanted)})",
            key="feature_profile",
        )
    return modalities


def run(
    preset: Preset,
    spec: DataSpec,
    seeds: tuple[int, ...],
    out_dir: Path,
    *,
    device: str = "cpu",
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> RunResults:
    """Train and test once per seed; write ``out_dir/results.json``; return its content.

    With ``resume``, the seeds ``results.json`` already holds are kept, not run again.

    Raises:
        ValueError: with ``resume``, a ``results.json`` that is not one (naming it).
    """
    from mercli.data import require_splits
    from mercli.train import fit, world

    data = load_data(spec, log, preset.model.tune_top_layers)
    require_splits(data, spec.path)
    config = model_config_for(preset, spec, data.info, data.feature_profile)
    if preset.train.init is not None:
        from mercli.model.graft import grafted_config, source_config

        source, directory = source_config(preset.train.init)
        config = grafted_config(config, source, str(directory))
    aux = load_aux_text(spec, preset, config, data, log)
    if aux is not None:
        config = replace(config, aux_heads=aux.names)
    profile = feature_profile(spec, config, data.feature_profile)
    meta = CheckpointMeta(model_config={}, feature_profile=profile)
    done = _read_results(out_dir) if resume else None
    per_seed: dict[str, FitResult] = {} if done is None else dict(done.seeds)
    results = RunResults.of(spec, preset, config, per_seed)
    for seed in seeds:
        if str(seed) in per_seed:
            log(f"seed {seed} already done; skipping")
            continue
        result = fit(
            config,
            data,
            preset.train,
            out_dir / f"seed_{seed}",
            seed=seed,
            device=device,
            resume=resume,
            meta=meta,
            log=log,
            aux=aux,
        )
        per_seed[str(seed)] = result
        results = RunResults.of(spec, preset, config, per_seed)
        if world()[0] == 0:
            _write_results(out_dir, results)
    return results


def load_aux_text(
    spec: DataSpec, preset: Preset, config: ModelConfig, data: Any, log: Callable[[str], None]
) -> Any:
    """The auxiliary text sets of ``spec`` as model input (an
    :class:`~mercli.data.aux_text.AuxTextData`), or None without any.

    Raises:
        ValueError: the sets named in ``preset.train.aux_text`` and in ``spec`` differ.
        DatasetError: a set's files are missing or malformed, or the data's text does not go
            through a named backbone (the auxiliary rows must be read the same way).
    """
    from mercli.data import DatasetError

    names = tuple(name for name, _ in spec.aux_text)
    if names != tuple(preset.train.aux_text.sets):
        raise ValueError(
            f"auxiliary sets given ({', '.join(names) or 'none'}) and configured "
            f"({', '.join(preset.train.aux_text.sets) or 'none'}) differ"
        )
    if not names:
        return None
    if config.text_backbone is None or "text" not in config.modalities:
        raise DatasetError(
            spec.path, "auxiliary text needs a text backbone (--text-backbone) and text input"
        )
    from mercli.data.aux_text import aux_text_data, load_aux

    most = preset.train.aux_text.max_train_rows
    splits = [load_aux(name, path, most) for name, path in spec.aux_text]
    states_of = None
    if not config.finetune_text_backbone:
        import numpy as np

        from mercli.data.text_states import cached_states
        from mercli.model.text_backbone import state_layers

        backbone = config.text_backbone
        layers = state_layers(backbone, config.tune_top_layers)

        def states_of(texts: list[str]) -> list[Any]:
            states = cached_states(texts, backbone, log=log, layers=layers)
            return [np.ascontiguousarray(x) for x in states]

    aux = aux_text_data(splits, data.collate, states_of)
    for split in splits:
        log(
            f"auxiliary {split.name}: {len(split.train)} training rows, {len(split.held_out)} "
            f"held out ({split.how_held_out})"
        )
    return aux


@dataclass(frozen=True)
class MetricSummary:
    """One test metric over the seeds."""

    mean: float
    std: float  # sample standard deviation (ddof 1); 0 for one seed


@dataclass(frozen=True)
class RunResults:
    """What ``mer train`` ran and found: the data, the configs and one result per seed.

    :meth:`to_dict` is ``results.json`` (with the test-metric ``summary``); :meth:`from_dict`
    reads it back.

    Attributes:
        dataset: the benchmark the data follows (``mosi`` ...).
        data: the ``--data`` path; extra_train: the ``--extra-train`` paths.
        model_config, train_config: as ``ModelConfig.to_dict`` / ``TrainConfig.to_dict``.
        seeds: per seed (its decimal string, as in the JSON), its :class:`FitResult`.
    """

    dataset: str
    data: str
    extra_train: tuple[str, ...]
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    seeds: dict[str, FitResult]

    @classmethod
    def of(
        cls, spec: DataSpec, preset: Preset, config: ModelConfig, seeds: dict[str, FitResult]
    ) -> RunResults:
        return cls(
            dataset=spec.dataset,
            data=str(spec.path),
            extra_train=tuple(str(p) for p in spec.extra_train),
            model_config=config.to_dict(),
            train_config=preset.train.to_dict(),
            seeds=dict(seeds),
        )

    @property
    def test_by_seed(self) -> dict[str, dict[str, float]]:
        """Per seed, the test metrics (what :func:`compare` takes)."""
        return {seed: r.test_metrics for seed, r in self.seeds.items()}

    def summary(self) -> dict[str, MetricSummary]:
        """Each test metric's mean and standard deviation over the seeds, metrics sorted."""
        metrics = sorted({k for r in self.seeds.values() for k in r.test_metrics})
        out = {}
        for k in metrics:
            values = np.array([r.test_metrics[k] for r in self.seeds.values()], dtype=np.float64)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[k] = MetricSummary(float(np.mean(values)), std)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "data": self.data,
            "extra_train": list(self.extra_train),
            "model_config": self.model_config,
            "train_config": self.train_config,
            "seeds": {seed: r.to_dict() for seed, r in self.seeds.items()},
            "summary": {k: asdict(s) for k, s in self.summary().items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> RunResults:
        """Read ``results.json``.

        Raises:
            ValueError: not a results file of ``mer train`` (saying what is wrong).
        """
        from mercli.train import FitResult

        if not isinstance(data, dict) or not isinstance(data.get("seeds"), dict):
            raise ValueError("not a results.json of `mer train` (no 'seeds' object at the top)")
        seeds = {}
        for seed, entry in data["seeds"].items():
            try:
                seeds[str(seed)] = FitResult.from_dict(entry)
            except ValueError as error:
                raise ValueError(f"seed {seed}: {error}") from error
        try:
            return cls(
                dataset=str(data["dataset"]),
                data=str(data["data"]),
                extra_train=tuple(str(p) for p in data.get("extra_train", ())),
                model_config=dict(data["model_config"]),
                train_config=dict(data["train_config"]),
                seeds=seeds,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a results.json of `mer train` ({error!r:.80})") from error


def test_metrics_by_seed(data: Any) -> dict[str, dict[str, float]]:
    """Per seed, the test metrics of a ``results.json`` document; only ``seeds`` and their
    ``test`` are read (``mer compare`` also takes results trimmed to these).

    Raises:
        ValueError: the document holds no ``seeds`` object or a seed no ``test`` object.
    """
    if not isinstance(data, dict) or not isinstance(data.get("seeds"), dict):
        raise ValueError("not a results.json of `mer train` (no 'seeds' object at the top)")
    out = {}
    for seed, entry in data["seeds"].items():
        test = entry.get("test") if isinstance(entry, dict) else None
        if not isinstance(test, dict):
            raise ValueError(f"seed {seed} has no 'test' metrics object")
        out[str(seed)] = test
    return out


def _read_results(out_dir: Path) -> RunResults | None:
    path = out_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return RunResults.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, OSError) as error:  # not JSON, not UTF-8, not a results file
        raise ValueError(f"{path}: cannot resume from it ({error})") from error


def _write_results(out_dir: Path, results: RunResults) -> None:
    from mercli.atomic import write_atomically
    from mercli.jsontext import dumps

    text = dumps(results.to_dict(), indent=2, default=_plain)
    write_atomically(out_dir / RESULTS_FILE, lambda f: f.write(text.encode()))


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(type(value).__name__)


@dataclass
class Comparison:
    metric: str
    mean_a: float
    mean_b: float
    p_value: float
    n_seeds: int


def compare(
    a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]]
) -> list[Comparison]:
    """Paired t-test per test metric over the seeds both results share (paper 3.3).

    Args:
        a, b: per seed, test metrics (:attr:`RunResults.test_by_seed`,
            :func:`test_metrics_by_seed`).
    """
    from scipy.stats import ttest_rel

    seeds = sorted(set(a) & set(b), key=int)
    if len(seeds) < 2:
        raise ValueError(f"a paired t-test needs at least 2 common seeds; found {seeds or 'none'}")
    metrics = [k for k in a[seeds[0]] if k in b[seeds[0]]]
    rows = []
    for k in metrics:
        xa = np.array([a[s][k] for s in seeds], dtype=np.float64)
        xb = np.array([b[s][k] for s in seeds], dtype=np.float64)
        p = float(ttest_rel(xa, xb).pvalue) if np.any(xa != xb) else 1.0
        rows.append(Comparison(k, float(xa.mean()), float(xb.mean()), p, len(seeds)))
    return rows
