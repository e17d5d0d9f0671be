"""The progress bar: Lightning's Rich bar, without the "Epoch 0/-2" it shows for runs bounded by steps."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Rich's bar. Lightning titles it "Epoch N/<max_epochs - 1>", which reads "Epoch 0/-2" when training is
    bounded by ``max_steps`` (max_epochs -1, as every config here is); then the title is "Epoch N" alone."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs >= 1:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"  # padded as Lightning pads
