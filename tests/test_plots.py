import matplotlib

matplotlib.use("Agg")

from helpers import plots  # noqa: E402

LOG = [
    {"loss": 2.0, "epoch": 0.5, "step": 1},
    {"loss": 1.5, "epoch": 1.0, "step": 2},
    {"eval_loss": 1.8, "epoch": 1.0, "step": 2},
    {"loss": 1.0, "epoch": 2.0, "step": 4},
    {"eval_loss": 1.2, "epoch": 2.0, "step": 4},
    {"train_runtime": 3.0, "epoch": 2.0},
]


def test_loss_history_splits_train_and_validation():
    history = plots.loss_history(LOG)
    assert history["train"] == [(0.5, 2.0), (1.0, 1.5), (2.0, 1.0)]
    assert history["validation"] == [(1.0, 1.8), (2.0, 1.2)]


def test_plot_loss_draws_both_curves():
    ax = plots.plot_loss(LOG, title="t")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["train loss", "validation loss"]
    assert list(ax.get_lines()[1].get_ydata()) == [1.8, 1.2]
