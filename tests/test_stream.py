"""The streaming data path: Ray Data over the Parquet shards, one batch of photos decoded at a time."""

import hashlib
from dataclasses import replace

import pytest
import torch

from pipeline import distributed
from pipeline.data import stream
from pipeline.data.shards import read_images
from pipeline.errors import UserError
from pipeline.ssl import pretrain


def digest(image) -> str:
    return hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()


def test_a_streamed_pass_holds_every_in_memory_photo_once(ray_local, tiny_data):
    photos, _, _ = read_images(tiny_data / "photos_full", "train")
    data = stream.photo_dataset(tiny_data / "photos_full", "train")
    first_pass = []
    for batch in stream.photo_batches(data, 1, seed=0, epoch=0):
        first_pass += batch
        if len(first_pass) == len(photos):
            break
    assert sorted(map(digest, first_pass)) == sorted(map(digest, photos))
    again = [b[0] for b, _ in zip(stream.photo_batches(data, 1, seed=0, epoch=0), range(6))]
    other = [b[0] for b, _ in zip(stream.photo_batches(data, 1, seed=0, epoch=1), range(6))]
    assert list(map(digest, again)) == list(map(digest, first_pass[:6]))  # an epoch's order is its seed's
    assert list(map(digest, other)) != list(map(digest, first_pass[:6]))


def test_auto_streams_past_the_memory_limit_and_bad_modes_are_one_line(tiny_data, monkeypatch):
    folder = tiny_data / "photos_full"
    assert not stream.streams("auto", folder, "train") and stream.streams("stream", folder, "train")
    monkeypatch.setattr(stream, "MEMORY_LIMIT_BYTES", stream.bank_bytes(folder, "train") - 1)
    assert stream.streams("auto", folder, "train")
    with pytest.raises(UserError, match="unknown data path 'disk'"):
        stream.streams("disk", folder, "train")
    with pytest.raises(UserError, match="no shards for split 'train' of .*missing"):
        stream.photo_dataset(tiny_data / "missing", "train")


def test_too_few_photos_for_a_batch_is_one_line(ray_local, tiny_data):
    data = stream.photo_dataset(tiny_data / "photos_full", "train").limit(3)
    with pytest.raises(UserError, match="fewer than one batch of 4"):
        next(stream.photo_batches(data, 4, seed=0, epoch=0))


def streamed_job(params, data, method="simsiam", epochs=2):
    pre = params.pretrain.model_copy(update={"data": "stream", "epochs": epochs})
    return pretrain.job_config(params.model_copy(update={"pretrain": pre}), method, data)


def test_streamed_pretraining_resumes_to_the_uninterrupted_run(ray_local, tiny_params, tiny_data):
    job = streamed_job(tiny_params, tiny_data, "swav")
    assert job.stream

    def session(**kw):
        return distributed.PlainSession(
            datasets={"photos": stream.photo_dataset(tiny_data / "photos_full", "train")}, **kw
        )

    full = session(keep_all=True)
    distributed.run_plain(pretrain.train_loop, job, session=full)
    resumed = distributed.run_plain(pretrain.train_loop, job, session=session(resume=full.states[0]))
    assert all(torch.equal(full.states[-1]["model"][k], resumed["model"][k]) for k in resumed["model"])
    memory = distributed.run_plain(pretrain.train_loop, replace(job, stream=False))
    assert any(not torch.equal(memory["model"][k], full.states[-1]["model"][k]) for k in memory["model"])


def test_streamed_pretraining_on_two_ray_train_workers(ray_local, tiny_params, tiny_data, tmp_path):
    pre = tiny_params.pretrain.model_copy(update={"data": "stream", "epochs": 2})
    params = tiny_params.model_copy(update={"pretrain": pre})
    [state] = pretrain.pretrain(params, "simsiam", tiny_data, tmp_path / "runs")
    assert len(state["history"]) == 2 and all(0 <= row["knn_top1"] <= 1 for row in state["history"])
