"""``pspl-train``: compose the config, check it, instantiate data, module and trainer, fit, report."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pspl_lightning.cli.checks import check_train_config
from pspl_lightning.cli.failures import (
    EXIT_INTERRUPTED,
    EXIT_SIGTERM,
    one_line_failures,
    refuse_moved_keys,
    say,
    share_run_folder,
)
from pspl_lightning.cli.hydra_setup import config_dir
from pspl_lightning.cli.launch import (
    adapt_to_launch,
    finish_wandb,
    hydra_runtime,
    rank_overrides,
    refuse_unshared_torchrun_folder,
)
from pspl_lightning.cli.launcher_check import refuse_unavailable_launcher
from pspl_lightning.cli.run_folder import NothingToTrain, finished_run, resolve_resume
from pspl_lightning.cli.sweep_summary import EXIT_SWEEP_FAILED, failed_jobs, note_failure
from pspl_lightning.launch.stop_requests import (
    arm_interrupts,
    forward_to,
    hold_stop_requests,
    ignore_from_now_on,
    last_stop,
    started_as_a_rank,
)

log = logging.getLogger("pspl_lightning")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says, end with a validation pass, write ``metrics.json``; return its metrics."""
    try:
        ckpt_path = resolve_resume(cfg)  # a resume takes the run's recorded config first
    except NothingToTrain as done:
        print(done, file=sys.stderr, flush=True)  # not logged: the run's train.log stays as it was
        return finished_run(done.run, own_folder=Path(cfg.paths.output_dir))
    check_train_config(cfg)  # before the heavy imports below: a config mistake answers at once
    adapt_to_launch(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    import lightning as L

    from pspl_lightning.callbacks.summary import summary_without_flops
    from pspl_lightning.cli.build import build, build_module, build_trainer
    from pspl_lightning.cli.lightning_notices import quiet_lightning
    from pspl_lightning.cli.preflight import check_data, check_memory, check_steps_left
    from pspl_lightning.cli.runtime_errors import explain
    from pspl_lightning.loop_state import spawns_its_ranks

    quiet_lightning()
    if cfg.get("ckpt_path"):
        check_steps_left(str(cfg.ckpt_path), int(cfg.trainer.max_steps))
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = build(cfg.data)
    module = build_module(cfg, datamodule.val_set_names, warm_start=ckpt_path is None)
    check_data(datamodule, cfg)  # before any logger starts: a data mistake leaves no W&B run or run folder
    check_memory(cfg, module.plain_net)  # a batch that cannot fit is refused before the loader makes it
    finish_wandb()  # a W&B run left open in this process (an earlier job) would receive this run's logs
    trainer, loggers = build_trainer(cfg, output_dir)
    if trainer.world_size > 1:
        share_run_folder()
    summary_without_flops(trainer)
    for lg in loggers:
        lg.log_hyperparams(module.run_config)

    log.info("Training %s with %s for %d steps; outputs in %s", type(module.plain_net).__name__,
             type(module.loss).__name__, trainer.max_steps, output_dir)
    status = "failed"
    if spawns_its_ranks(trainer):  # the ranks are elsewhere: a stop request must reach them
        forward_to(trainer.strategy.launcher.kill)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        status = "success"
    except RuntimeError as exc:  # out of memory, an overflowing update: one line naming the settings
        stage = getattr(trainer.state.stage, "value", "train")
        err = explain(exc, cfg, module.plain_net, stage, trainer.global_step)
        if err is None:
            raise
        raise err from exc
    finally:
        forward_to(None)
        for lg in loggers:
            lg.finalize(status)
        finish_wandb(failed=status != "success")
    return report(output_dir / "metrics.json")


def report(metrics_file: Path) -> dict[str, float]:
    """Log and return the final validation that rank 0 wrote (also under ddp_spawn); {} if there is none."""
    if not metrics_file.is_file():
        return {}
    metrics = json.loads(metrics_file.read_text())
    summary = ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items() if k.count("/") == 1)
    log.info("Final validation at step %d: %s (in %s)", metrics["global_step"], summary, metrics_file)
    return metrics


def _after_failure(status: int) -> float | None:
    """In a sweep, one failed job must not end the others: NaN marks it failed; a stop (SIGTERM, Ctrl-C)
    to a sweep whose jobs run in this process ends the sweep after the job saved. (A mistake's run folder
    is removed by the failure path itself, :func:`pspl_lightning.cli.failures.one_line_failures`.)"""
    if hydra_runtime()[0]:
        note_failure(status)  # the kind of failure, for the sweep's table
        if status in (EXIT_SIGTERM, EXIT_INTERRUPTED) and _jobs_run_in_this_process():
            sys.exit(status)  # jobs run one after another in this process: the stop ends the sweep
        return float("nan")
    return None


def _jobs_run_in_this_process() -> bool:
    """A sweep of Hydra's basic launcher: its jobs run one after another in this process."""
    return hydra_runtime()[0] and "BasicLauncher" in str(HydraConfig.get().launcher.get("_target_"))


def _end_the_sweep_if_asked() -> None:
    """A stop request that came during a job's last step or final validation found no step boundary left:
    the job finished, and a sweep in this process must not go on to its next job as if nothing was asked."""
    signum = last_stop()
    if signum and _jobs_run_in_this_process():
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(f"Stopped by {what} as the job finished; the sweep's other jobs were not started")
        sys.exit(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_SIGTERM)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@one_line_failures(after=_after_failure)
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    _end_the_sweep_if_asked()
    return metrics.get(str(cfg.optimized_metric))  # the objective a Hydra sweeper (Optuna) optimises


@one_line_failures()
def main() -> None:
    """Console entry point of ``pspl-train``."""
    hold_stop_requests()  # first: SIGTERM/SIGUSR1 from now on are stop requests honoured at a step boundary
    if started_as_a_rank():  # and Ctrl-C too, in every rank from its start (see arm_interrupts)
        arm_interrupts(announce=False, whole_run=True)
    refuse_moved_keys(sys.argv[1:])
    refuse_unavailable_launcher(sys.argv[1:])
    refuse_unshared_torchrun_folder(sys.argv[1:])
    sys.argv += rank_overrides(sys.argv[1:])  # only global rank 0 writes run files
    _hydra_main()
    failed = failed_jobs()  # a sweep (-m) whose table, printed above, shows a failed job
    if failed:
        jobs = ", ".join(f"#{r.num}" for r in failed)
        print(f"Sweep: {len(failed)} job(s) failed: {jobs} (the table above)", file=sys.stderr)
        sys.exit(EXIT_SWEEP_FAILED)


if __name__ == "__main__":  # python -m pspl_lightning.cli.train: torchrun, DDP ranks
    try:
        main()
    finally:
        ignore_from_now_on()
