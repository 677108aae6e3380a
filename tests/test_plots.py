"""plots.beside_paper: our x values on our panel, the seeds as dots, the paper's bounds as off-scale marks."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from imagefolder import plots  # noqa: E402


@pytest.mark.parametrize("text, expected", [(">20", (">", 20.0)), ("<0.5", ("<", 0.5)), ("1.57", None),
                                            (">", None), (">x", None), (None, None), (3.0, None)])
def test_bound(text, expected):
    assert plots.bound(text) == expected


def test_beside_paper_draws_ours_on_our_x_each_seed_and_the_paper_bound_off_scale():
    summary = pd.DataFrame({"paper setting": ["4096", "8192", "16384"], "variant": ["1024", "2048", "4096"],
                            "rFD": [16.0, 15.5, 14.0], "rFD sd": [1.0, 0.5, 0.2], "paper rFID": [">20", 0.7, 0.67]})
    runs = pd.DataFrame({"variant": ["1024"] * 3 + ["2048"] * 3 + ["4096"] * 3, "seed": [0, 1, 2] * 3,
                         "rFD": [15.0, 16.0, 17.0, 15.0, 15.5, 16.0, 13.8, 14.0, 14.2]})
    fig = plots.beside_paper(summary, "variant", {"rFD": "paper rFID"}, paper_x="paper setting", runs=runs,
                             xlabel="codebook size (ours)", paper_xlabel="codebook size (paper)")
    ours, paper = fig.axes
    assert [t.get_text() for t in ours.get_xticklabels()] == ["1024", "2048", "4096"]
    assert [t.get_text() for t in paper.get_xticklabels()] == ["4096", "8192", "16384"]
    assert ours.get_xlabel() == "codebook size (ours)" and paper.get_xlabel() == "codebook size (paper)"
    assert plots.SEED_SD in ours.get_title()
    dots = [c for c in ours.collections if c.get_offsets().shape[0] == 3 and c.get_sizes()[0] == 10]
    assert sorted(y for c in dots for y in c.get_offsets()[:, 1]) == sorted(runs["rFD"])
    marks = [t for t in paper.texts if t.get_text() == ">20"]
    assert len(marks) == 1 and marks[0].xy == (0, 1.0)  # the first setting, at the panel's top edge
    assert not [t for t in ours.texts]
    plt.close(fig)
