"""What ``lit_tutorial/internals.py`` relies on in Lightning: each test fails by name when Lightning changes it."""

import lightning as L
import torch

from conftest import CONFIGS
from lit_tutorial.cli import make_cli
from lit_tutorial.data import RandomTensorDataModule
from lit_tutorial.internals import HOOK_NAME_ATTRIBUTE, built_by_cli, cli_model_config
from lit_tutorial.models import Regressor
from lit_tutorial.nets import TwoLayerNet


class HookNames(Regressor):
    """Records the hook-name attribute as seen from inside two hooks."""

    seen: list

    def training_step(self, batch, batch_idx):
        self.seen.append(getattr(self, HOOK_NAME_ATTRIBUTE, "<unset>"))
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        self.seen.append(getattr(self, HOOK_NAME_ATTRIBUTE, "<unset>"))


def test_lightning_still_names_the_running_hook_in_current_fx_name(tmp_path):
    """FastHookNameMixin speeds up assignments of this attribute; if this fails, Lightning no longer sets it."""
    model = HookNames(TwoLayerNet(), optimizer=lambda p: torch.optim.SGD(p, lr=1e-4))
    model.seen = []
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, RandomTensorDataModule(steps=2))
    assert model.seen == ["training_step", "training_step", "on_train_epoch_end"]
    # The short path stores it as a plain attribute, never as a parameter, buffer or submodule.
    assert HOOK_NAME_ATTRIBUTE in vars(model) and HOOK_NAME_ATTRIBUTE not in dict(model.named_modules())


def test_other_values_and_attributes_take_the_module_path():
    model = Regressor(TwoLayerNet())
    model.extra = torch.nn.Linear(2, 2)
    assert "extra" in dict(model.named_modules())
    setattr(model, HOOK_NAME_ATTRIBUTE, torch.nn.Linear(2, 2))  # not a str: nn.Module registers it as usual
    assert HOOK_NAME_ATTRIBUTE in dict(model.named_modules())


def test_lightning_still_hands_the_cli_config_to_save_hyperparameters(tmp_path):
    """built_by_cli reads LightningCLI's private ``_given_hyperparameters``: built by the CLI, a model saves its
    config (the net as class_path and init_args), which load_from_checkpoint rebuilds it from; if this fails,
    Lightning no longer passes the config that way."""
    cli = make_cli(["--config", str(CONFIGS / "step6_optim.yaml"), f"--trainer.default_root_dir={tmp_path}"],
                   run=False)
    assert cli.model.hparams["net"]["class_path"] == "lit_tutorial.nets.two_layer_sequential"
    assert cli.model.hparams["_class_path"] == "lit_tutorial.models.Regressor"
    assert not built_by_cli() and dict(Regressor(TwoLayerNet()).hparams) == {}  # built in Python: no objects saved


def test_lightning_still_records_the_models_class_path_in_hyper_parameters(tmp_path):
    """settings.py checks a checkpoint's hyper_parameters, which LightningCLI rebuilds the model from on resume,
    through cli_model_config; if this fails, Lightning keeps the model's class under another key."""
    cli = make_cli(["--config", str(CONFIGS / "step6_optim.yaml"), f"--trainer.default_root_dir={tmp_path}"],
                   run=False)
    config = cli_model_config(dict(cli.model.hparams))
    assert config["class_path"] == "lit_tutorial.models.Regressor"
    assert set(config["init_args"]) == {"net", "optimizer"}
