"""The episode-level side of ``--source robomimic`` (converters/robomimic.py): attributes, task text,
success and provenance, per preset. What each field becomes is in the table at the head of robomimic.py."""

from __future__ import annotations

import hashlib
import json

from wamdata.errors import SourceError
from wamdata.schema import Episode
from wamdata.sources import json_value


def json_attr(item, obj, name: str, where: str, preset: str | None = None) -> dict:
    """A JSON attribute parsed; {} when absent, unless ``preset`` requires it (then the item fails)."""
    if name not in obj.attrs:
        if preset:
            raise SourceError(item, f"robomimic: attr {name!r} of {where} missing (preset={preset})")
        return {}
    try:
        return json.loads(json_value(obj.attrs[name]))
    except (TypeError, ValueError) as e:
        raise SourceError(item, f"robomimic: attr {name!r} of {where} is not JSON ({e})") from None


def looks_like(data) -> str | None:
    """The preset a file's markers suggest: LIBERO's ``problem_info``, RoboCasa's ``ep_meta``, MimicGen's
    ``datagen_info`` (discovery only warns with it; the preset is never switched on silently)."""
    if "problem_info" in data.attrs:
        return "libero"
    first = next((data[k] for k in sorted(data) if k.startswith("demo_")), None)
    if first is not None and "ep_meta" in first.attrs:
        return "robocasa"
    if first is not None and "datagen_info" in first:
        return "mimicgen"
    return None


def _success(preset: str, rewards, env_kwargs: dict) -> tuple[bool | None, str]:
    if rewards is None or not len(rewards):
        return None, "unknown: no rewards"
    if preset == "libero":
        return bool(rewards[-1] == 1), "rewards[-1] == 1 (LIBERO marks the last step of kept demos)"
    if env_kwargs.get("reward_shaping"):
        return None, "unknown: shaped rewards"
    return bool(rewards[-1] > 0), "rewards[-1] > 0 (sparse reward r(s') of the final state)"


def describe(item, ep: Episode, data, g, env_args: dict, arrays: dict, options, final_next: dict,
             next_images: list[str]) -> None:
    """Task, success and metadata of one demo (``data`` the file's data group, ``g`` the demo's)."""
    preset, key = options.preset, f"data/{item.info['demo']}"
    file_attrs = {k: json_value(v) for k, v in data.attrs.items() if k != "env_args"}
    demo_attrs = {k: json_value(v) for k, v in g.attrs.items() if k not in ("model_file", "ep_meta", "camera_info")}
    if "model_file" in g.attrs:   # the episode's MJCF (hundreds of kB): identified, not copied
        xml = json_value(g.attrs["model_file"])
        demo_attrs["model_file"] = {"sha1": hashlib.sha1(xml.encode()).hexdigest(), "chars": len(xml)}
    ep_meta = json_attr(item, g, "ep_meta", key, preset if preset == "robocasa" else None)
    problem = json_attr(item, data, "problem_info", "data", preset if preset == "libero" else None)
    if preset == "libero" and "language_instruction" not in problem:
        raise SourceError(item, "robomimic: data attr problem_info has no language_instruction (preset=libero)")
    if preset == "robocasa" and "lang" not in ep_meta:
        raise SourceError(item, f"robomimic: {key} attr ep_meta has no lang (preset=robocasa)")
    text = options.task or problem.get("language_instruction") or ep_meta.get("lang") or env_args.get("env_name")
    ep.tasks = [text] if text else []
    ep.success, how = _success(preset, arrays.get("rewards"), env_args.get("env_kwargs") or {})
    provenance = {"path": item.info["relpath"], "demo": item.info["demo"], "filter_key": options.filter_key}
    if "src_demo_inds" in arrays:   # MimicGen: the source demo each subtask segment was generated from
        provenance["src_demo_inds"] = arrays["src_demo_inds"].tolist()
    ep.metadata.update({"preset": preset, "provenance": provenance, "env_args": env_args, "success_from": how,
                        "file_attrs": file_attrs, "demo_attrs": demo_attrs, "final_next_obs": final_next})
    optional = {"ep_meta": ep_meta, "problem_info": problem, "next_obs_images_dropped": next_images,
                "datagen_info_attrs": ({k: json_value(v) for k, v in g["datagen_info"].attrs.items()}
                                       if "datagen_info" in g else {})}
    ep.metadata.update({k: v for k, v in optional.items() if v})
