"""keras_trpo.evaluate with video_folder: recording does not change what is evaluated (issue 24, item 6)."""

import os
import sys

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo

from helpers import cartpole_env, tiny_trpo


@pytest.fixture
def model(varied_cartpole_policy):
    return varied_cartpole_policy


@pytest.fixture(scope="module")
def untrained():
    """An untrained CartPole policy: its episodes last about 10 steps (short videos)."""
    env = cartpole_env(1)
    policy = tiny_trpo(env, compile=False)
    env.close()
    return policy


def videos(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".mp4"))


def test_an_env_id_with_video_gives_the_returns_without_video_and_one_video_per_episode(model, tmp_path):
    """Catches: recording on another env construction (one env playing the episodes one after the other, as
    keras-trpo evaluate --video did: returns 217/253 instead of 205/217 here), or other seeds."""
    plain = keras_trpo.evaluate(model, "CartPole-v1", episodes=2, seed=0)
    assert len(set(plain)) == 2  # two different episodes: a change of seeds or order would show
    recorded = keras_trpo.evaluate(model, "CartPole-v1", episodes=2, seed=0, video_folder=tmp_path / "videos")
    assert recorded == plain
    assert videos(tmp_path / "videos") == ["env0-episode-0.mp4", "env1-episode-0.mp4"]
    assert all((tmp_path / "videos" / name).stat().st_size > 1000 for name in videos(tmp_path / "videos"))


def test_a_gymnasium_env_with_video_records_each_of_its_episodes(untrained, tmp_path):
    """Catches: a caller's single Env recorded only in part (its last episode) or with other returns."""
    plain = keras_trpo.evaluate(untrained, gymnasium.make("CartPole-v1"), episodes=2, seed=5)
    env = gymnasium.make("CartPole-v1", render_mode="rgb_array")
    assert keras_trpo.evaluate(untrained, env, episodes=2, seed=5, video_folder=tmp_path / "v") == plain
    assert videos(tmp_path / "v") == ["env0-episode-0.mp4", "env0-episode-1.mp4"]
    env.close()


@pytest.mark.parametrize(
    "make_env,message",
    [
        (lambda: gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync", render_mode="rgb_array"),
         "video_folder needs an env id or a gymnasium Env; got a VectorEnv, whose sub-environments cannot be "
         "wrapped once it is made: make it with wrappers=[keras_trpo.evaluation.video_wrapper("),
        (lambda: gymnasium.make("CartPole-v1"),
         "video_folder needs an env that renders images: make it with render_mode='rgb_array'; got render_mode=None."),
    ],
    ids=["vector-env", "not-rendering"],
)
def test_video_with_an_env_it_cannot_record_is_one_clear_error(untrained, tmp_path, make_env, message):
    """Catches: gymnasium's own errors (or none) instead of one line naming video_folder and the fix."""
    env = make_env()
    with pytest.raises(ValueError) as raised:
        keras_trpo.evaluate(untrained, env, episodes=2, video_folder=tmp_path / "videos")
    env.close()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)
    assert not (tmp_path / "videos").exists()


def test_video_without_moviepy_names_the_extra_before_anything_runs(untrained, tmp_path, monkeypatch):
    """Catches: gymnasium's 'pip install "gymnasium[other]"' (or a failure at the end of the first episode)
    instead of the package's extra."""
    monkeypatch.setitem(sys.modules, "moviepy", None)  # importlib.util.find_spec("moviepy") is None: not installed
    with pytest.raises(ImportError) as raised:
        keras_trpo.evaluate(untrained, "CartPole-v1", episodes=2, video_folder=tmp_path / "videos")
    assert str(raised.value) == (
        "video_folder needs moviepy, which gymnasium's RecordVideo writes videos with: pip install \"keras-trpo[video]\""
    )
    assert not (tmp_path / "videos").exists()


def test_video_wrapper_in_make_vec_records_the_quota_of_each_sub_env(untrained, tmp_path):
    """The recipe the VectorEnv error gives. Catches: sub-envs numbered wrongly or recording past their quota."""
    from keras_trpo.evaluation import episode_quota, video_wrapper

    assert episode_quota(5, 2) == [3, 2]
    folder = tmp_path / "v"
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync", render_mode="rgb_array",
                             wrappers=[video_wrapper(folder, episode_quota(3, 2))])
    returns = keras_trpo.evaluate(untrained, env, episodes=3, seed=1)
    env.close()
    plain = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    assert returns == keras_trpo.evaluate(untrained, plain, episodes=3, seed=1)
    assert videos(folder) == ["env0-episode-0.mp4", "env0-episode-1.mp4", "env1-episode-0.mp4"]
    np.testing.assert_array_less(0, [os.path.getsize(folder / name) for name in videos(folder)])


def test_evaluating_on_the_env_a_rollouts_collects_with_is_refused():
    """Before: no error; the next batch continued from observations the env no longer had (found by a new-user
    trial). Catches: Rollouts not marking its env, or evaluate not checking it."""
    vector = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    single = gymnasium.make("CartPole-v1")
    untrained = keras_trpo.TRPO.for_env(vector, hidden_units=(8,), value_hidden_units=(8,), seed=0)
    for env in (vector, single):
        keras_trpo.Rollouts(env, untrained, steps=8, seed=0)
        with pytest.raises(ValueError, match=r"^env is the environment a keras_trpo\.Rollouts collects with: "):
            keras_trpo.evaluate(untrained, env, episodes=1)
    rollouts = keras_trpo.Rollouts(gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"),
                                   untrained, steps=8, seed=0)
    untrained.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"^env is the environment a keras_trpo\.Rollouts collects with"):
        untrained.fit(rollouts, epochs=1, verbose=0,
                      callbacks=[keras_trpo.callbacks.Evaluation(rollouts.env, episodes=1, every=1)])
    assert keras_trpo.evaluate(untrained, gymnasium.make_vec("CartPole-v1", num_envs=1), episodes=1)  # another env
    # Through wrappers, either way round; and an env whose Rollouts were refused is not collected with.
    inner = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    keras_trpo.Rollouts(gymnasium.wrappers.vector.RecordEpisodeStatistics(inner), untrained, steps=8)
    for wrapped_or_inner in (inner, gymnasium.wrappers.vector.RecordEpisodeStatistics(inner)):
        with pytest.raises(ValueError, match=r"^env is the environment a keras_trpo\.Rollouts collects with"):
            keras_trpo.evaluate(untrained, wrapped_or_inner, episodes=1)
    refused = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="steps must be a multiple"):
        keras_trpo.Rollouts(refused, untrained, steps=7)
    assert keras_trpo.evaluate(untrained, refused, episodes=1)


def test_evaluate_takes_a_loaded_saved_model_its_signature_or_a_plain_function(model, tmp_path):
    """Before: a signature failed with "'dict' object has no attribute 'numpy'", a loaded SavedModel with
    "'_UserObject' object is not callable", a numpy function inside tf.function (new-user trial).
    Catches: any of the three no longer reaching the policy's actions."""
    expected = keras_trpo.evaluate(model, "CartPole-v1", episodes=2, seed=3)
    loaded = tf.saved_model.load(model.export(str(tmp_path / "policy")))
    for policy in (loaded, loaded.signatures["serving_default"], lambda o: np.asarray(model(np.asarray(o)))):
        assert keras_trpo.evaluate(policy, "CartPole-v1", episodes=2, seed=3) == expected
    with pytest.raises(TypeError, match=r"^model must be a keras_trpo\.TRPO, a loaded SavedModel, a signature or"):
        keras_trpo.evaluate(object(), "CartPole-v1", episodes=1)
