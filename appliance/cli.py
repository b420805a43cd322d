"""The command line: ``roombox demo|run|process|doa|faces|bench|render|score|cameras|mics|token|pin``.

This is the contract other tools and our benchmarks drive the box through; keep it stable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from appliance.config import Config, ConfigError, load_config, parse_config
from common.atomic import write_atomic
from common.errors import RoomboxError


def _print_lines(records: Iterable[dict[str, Any]]) -> None:
    for r in records:
        sys.stdout.write(json.dumps(r) + "\n")
    sys.stdout.flush()


def _with_panel(cfg: Config, a: argparse.Namespace) -> Config:
    """``cfg`` with the command line's --host and --port, validated like the file's [panel]."""
    over = {k: v for k, v in (("host", a.host), ("port", a.port)) if v is not None}
    data = cfg.model_dump(mode="json")
    data["panel"] = {**data["panel"], **over}
    return parse_config(data, "command line")


def demo_config_path(given: str | None) -> Path | None:
    """Where ``roombox demo`` reads its config, and where the config API writes what the panel and the API
    change: the ``--config`` file, else the box's own saved config (``$ROOMBOX_HOME/config.toml``) when there
    is one, so that a change made through the API outlives a restart."""
    from common.paths import home_dir

    if given is not None:
        return Path(given)
    saved = home_dir() / "config.toml"
    return saved if saved.exists() else None  # one that is no file is refused when it is read


def load_or_last_good(path: Path | None) -> tuple[Config, str | None]:
    """The box's config at ``path``; when it is refused, the last good revision (and why, for the box's log and
    health), so that a config mended wrong by hand, or one a new version refuses, does not keep the box (its
    camera, panel and fleet link) from starting: the service would only restart into the same error."""
    try:
        return load_config(path), None
    except ConfigError as e:
        if path is None or not path.is_file():
            raise
        from appliance.control.store import last_good
        from common.paths import home_dir

        found = last_good(path, home_dir() / "config-revisions", e)
        if found is None:
            raise
        return found.config, found.reason(path)  # logged by the box, and said by its health


FALL_BACK_TRIES = 5  # earlier revisions tried when the box cannot start on its config


def start_or_fall_back(
    start: Callable[[Config, str | None], int],
    saved: Config,
    refused: str | None,
    path: Path | None,
    prepare: Callable[[Config], Config] = lambda cfg: cfg,
) -> int:
    """Run the box (``start(cfg, refused)``) on ``saved``, given ``prepare``'s command-line options. When it
    cannot start on it (``StartFailed``: a camera of type file without its file, a panel address not on this
    machine, ... as a config written over the fleet or the API can ask for, valid but not for this box), on
    the newest earlier revision of the config that starts (``FALL_BACK_TRIES`` at most), with the reason in
    the box's log and health, as for a saved config that does not validate: the service would only restart
    into the same error, and the box, its panel and its fleet link would stay down."""
    from appliance.app import StartFailed
    from appliance.control.store import good_revisions
    from common.paths import home_dir

    try:
        return start(prepare(saved), refused)
    except StartFailed as e:
        first = e
    if path is None or not path.is_file():
        raise first
    tried = [saved]
    for rid, cfg in good_revisions(home_dir() / "config-revisions"):
        if any(cfg == t for t in tried):
            continue
        if len(tried) > FALL_BACK_TRIES:
            break
        tried.append(cfg)
        print(f"roombox: the box cannot start on {path} ({first}); trying revision {rid}", file=sys.stderr, flush=True)
        reason = (
            f"{path} cannot start ({first}); the box runs on revision {rid}, the newest earlier config that "
            "starts: mend the file, or save a config from the panel or the API"
        )
        try:
            return start(prepare(cfg), reason)
        except StartFailed:
            continue
    raise first


def cmd_demo(a: argparse.Namespace) -> int:
    from appliance.app import run_demo

    if a.whip is not None and not a.whip.startswith(("http://", "https://")):
        raise ValueError(f"--whip {a.whip!r}: expected the WHIP endpoint's http:// or https:// URL")
    path = demo_config_path(a.config)
    saved, refused = load_or_last_good(path)

    def prepare(cfg: Config) -> Config:
        cfg = _with_panel(cfg, a)
        if a.whip is not None or a.whip_token is not None:
            whip = {k: v for k, v in (("url", a.whip), ("token", a.whip_token)) if v is not None}
            cfg = cfg.model_copy(update={"whip": type(cfg.whip).model_validate({**cfg.whip.model_dump(), **whip})})
        return cfg

    from drivers.simroom.devices import scenario_path

    scenario = scenario_path(a.scenario)
    return start_or_fall_back(
        lambda cfg, why: run_demo(scenario, cfg, path, refused=why), saved, refused, path, prepare
    )


def cmd_run(a: argparse.Namespace) -> int:
    from appliance.app import serve

    path = Path(a.config)
    saved, refused = load_or_last_good(path)
    return start_or_fall_back(
        lambda cfg, why: serve(cfg, path, refused=why), saved, refused, path, lambda cfg: _with_panel(cfg, a)
    )


def cmd_token(a: argparse.Namespace) -> int:
    from appliance.control.kiosk import token_command

    return token_command(a)


def cmd_pin(a: argparse.Namespace) -> int:
    from appliance.control.kiosk import pin_command

    return pin_command(a)


def _outputs_apart(inputs: dict[str, str | None], outputs: dict[str, str | None]) -> None:
    """Refuse outputs that would overwrite an input or each other, or that cannot be written as files, before
    any work is done."""
    from common.atomic import check_writable

    def same(a: str, b: str) -> bool:
        pa, pb = Path(a), Path(b)
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()

    given = {k: v for k, v in outputs.items() if v is not None}
    for key, out in given.items():
        for name, path in inputs.items():
            if path is not None and same(out, path):
                raise ValueError(f"--{key} {out} is the --{name} file: it would be overwritten")
        check_writable(out)
    keys = list(given)
    for i, key in enumerate(keys):
        for other in keys[i + 1 :]:
            if same(given[key], given[other]):
                raise ValueError(f"--{key} and --{other} are the same file ({given[key]}): give each its own")


def cmd_process(a: argparse.Namespace) -> int:
    from appliance.process import run_offline

    _outputs_apart(
        {"video": a.video, "audio": a.audio, "config": a.config, "reference": a.reference},
        {"track": a.track, "out": a.out},
    )
    if a.out is not None and Path(a.out).suffix.lower() != ".mp4":
        raise ValueError(f"--out {a.out}: the framed video is written as MP4: give a .mp4 file name")
    cfg = load_config(a.config)
    lines = [
        json.dumps(r)
        for r in run_offline(
            Path(a.video),
            Path(a.audio),
            cfg,
            Path(a.out) if a.out else None,
            Path(a.reference) if a.reference else None,
            note=lambda text: print(f"roombox: note: {text}", file=sys.stderr),
        )
    ]
    write_atomic(a.track, "\n".join(lines) + "\n")
    print(
        f"roombox: {len(lines)} frames -> {a.track}" + (f", framed video -> {a.out}" if a.out else ""), file=sys.stderr
    )
    return 0


def cmd_doa(a: argparse.Namespace) -> int:
    from appliance.perception.hearing import Hearing, louder
    from appliance.step import gain_of
    from drivers.files import read_array_wav

    cfg = load_config(a.config)
    samples = read_array_wav(a.audio, cfg.mic_array)
    block = round(cfg.doa.block_ms * cfg.mic_array.sample_rate / 1000.0)
    if samples.shape[0] < block:
        raise ValueError(
            f"{a.audio}: {1000.0 * samples.shape[0] / cfg.mic_array.sample_rate:.1f} ms of audio is shorter "
            f"than one analysis block ([doa] block_ms = {cfg.doa.block_ms:g})"
        )
    heard_as = louder(samples, gain_of(cfg))  # the calibration's gain, as the box hears the array
    if a.reference is not None or cfg.doa.estimator == "tracker":
        from appliance.perception.listening import Listener, read_reference

        reference = None if a.reference is None else read_reference(a.reference, samples, cfg.mic_array.sample_rate)
        _print_lines(h.to_json() for h in Listener(cfg.mic_array, cfg.tracker, cfg.doa).feed(heard_as, 0.0, reference))
        return 0
    _print_lines(d.to_json() for d in Hearing(cfg.mic_array, cfg.doa).feed(heard_as, 0.0))
    return 0


def cmd_faces(a: argparse.Namespace) -> int:
    from appliance.perception.faces import iter_face_records

    if (a.image is None) == (a.video is None):
        raise ValueError("give exactly one of --image or --video")
    if a.every < 1:
        raise ValueError(f"--every {a.every}: give 1 (every frame) or more (every Nth frame)")
    cfg = load_config(a.config)
    _print_lines(
        iter_face_records(
            Path(a.image) if a.image else None,
            Path(a.video) if a.video else None,
            cfg.detector,
            every=a.every,
            hfov_deg=cfg.camera.hfov_deg,
        )
    )
    return 0


def cmd_render(a: argparse.Namespace) -> int:
    from drivers.simroom.devices import scenario_path
    from drivers.simroom.export import render_to_dir
    from drivers.simroom.scenario import load_scenario

    path = scenario_path(a.scenario)
    if not a.out.strip():  # Path("") is ".": the rendering would land among the files where it runs
        raise ValueError("--out is empty: give a directory to render into")
    out = render_to_dir(path, Path(a.out), duration_s=a.duration)
    length = load_scenario(path).duration_s
    if a.duration is not None and a.duration > length:
        print(f"roombox: note: the scenario lasts {length:g} s: rendered all of it", file=sys.stderr)
    print(f"roombox: rendered {a.scenario} -> {out}", file=sys.stderr)
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from appliance.score import format_table, score
    from drivers.files import read_jsonl

    s = score(read_jsonl(a.track), read_jsonl(a.truth))
    print(json.dumps(s.to_json()) if a.json else format_table(s))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from appliance.bench import run_bench

    return run_bench(a.sections, quick=a.quick, as_json=a.json)


def cmd_cameras(a: argparse.Namespace) -> int:
    from drivers.v4l2 import list_cameras

    cams = list_cameras()
    if not cams:
        print("roombox cameras: no V4L2 camera (no /dev/video*)", file=sys.stderr)
    _print_lines(c.to_json() for c in cams)
    return 0


def cmd_mics(a: argparse.Namespace) -> int:
    from drivers.audio.devices import list_input_devices

    devices = list_input_devices(a.backend)
    _print_lines(d.to_json() for d in devices)
    if not devices:
        print(f"roombox mics: PortAudio ({a.backend}) sees no input device", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roombox", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the box on the simulated room; panel at http://HOST:PORT/")
    d.add_argument("--host", default=None, help="listen address (default from config: 127.0.0.1)")
    d.add_argument("--port", type=int, default=None, help="listen port (default from config: 8080)")
    d.add_argument("--scenario", default="default", help="a scenario TOML file, or default, short, farend")
    d.add_argument(
        "--config", default=None, help="roombox config (TOML); [camera] and [mic_array] come from the scenario"
    )
    d.add_argument(
        "--whip",
        default=None,
        metavar="URL",
        help="also publish the room to this WHIP endpoint (default from config: [whip] url)",
    )
    d.add_argument("--whip-token", default=None, metavar="T", help="bearer token for the WHIP endpoint")
    d.set_defaults(func=cmd_demo)

    rn = sub.add_parser("run", help="run the box on the devices its config names; panel at http://HOST:PORT/")
    rn.add_argument("--config", required=True, help="roombox config (TOML) with [cameras.*] and [mic_arrays.*]")
    rn.add_argument("--host", default=None, help="listen address (default from config: 127.0.0.1)")
    rn.add_argument("--port", type=int, default=None, help="listen port (default from config: 8080)")
    rn.set_defaults(func=cmd_run)

    pr = sub.add_parser("process", help="offline run over a recording; writes the track as JSON lines")
    pr.add_argument("--video", required=True)
    pr.add_argument("--audio", required=True, help="multichannel WAV; channel k is microphone k")
    pr.add_argument("--config", required=True)
    pr.add_argument("--track", required=True, help="output JSON lines, one per video frame")
    pr.add_argument("--out", default=None, help="also write the framed video here")
    pr.add_argument(
        "--reference",
        default=None,
        help="mono WAV of what the loudspeaker played (sample-aligned with --audio, same rate)",
    )
    pr.set_defaults(func=cmd_process)

    o = sub.add_parser("doa", help="direction of arrival per analysis block, as JSON lines")
    o.add_argument("--audio", required=True)
    o.add_argument("--config", required=True)
    o.add_argument(
        "--reference",
        default=None,
        help="mono WAV of what the loudspeaker played (sample-aligned with --audio, same rate): "
        'its blocks are marked "farend" and never reported as a local talker',
    )
    o.set_defaults(func=cmd_doa)

    f = sub.add_parser("faces", help="faces per image or video frame, as JSON lines")
    f.add_argument("--image", default=None)
    f.add_argument("--video", default=None)
    f.add_argument("--config", default=None)
    f.add_argument("--every", type=int, default=1, help="with --video: every Nth frame")
    f.set_defaults(func=cmd_faces)

    from appliance.bench import DEFAULT_SECTIONS, SECTIONS

    b = sub.add_parser("bench", help="print a table of figures (or JSON lines), each against a peer")
    b.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"{', '.join(SECTIONS)} (default: {', '.join(DEFAULT_SECTIONS)})",
    )
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    b.add_argument(
        "--json", action="store_true", help='one JSON line per figure: {"section", "figure", "value", "unit"}'
    )
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("render", help="render a simulated-room scenario to room.mp4, array.wav, config, truth")
    r.add_argument("--scenario", default="default", help="a scenario TOML file, or default, short, farend")
    r.add_argument("--out", required=True)
    r.add_argument("--duration", type=float, default=None, help="seconds (default: the scenario's)")
    r.set_defaults(func=cmd_render)

    c = sub.add_parser("cameras", help="the USB (V4L2) cameras present, with their formats, as JSON lines")
    c.set_defaults(func=cmd_cameras)

    s = sub.add_parser("score", help="score a track against the simulated room's ground truth")
    s.add_argument("--track", required=True)
    s.add_argument("--truth", required=True)
    s.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    s.set_defaults(func=cmd_score)

    t = sub.add_parser("token", help="API and panel tokens: create (printed once), list, revoke")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", help="make a token; the token itself is the last line printed")
    tc.add_argument(
        "--scope",
        required=True,
        choices=["read", "control", "admin"],
        help="read: state and stream; control: also the panel's commands; admin: also the config",
    )
    tc.add_argument(
        "--name",
        default=None,
        help="1-64 printable characters, not 8 hex digits (that is what an id looks like); default token-ID",
    )
    tc.add_argument(
        "--expires-days",
        type=float,
        default=None,
        metavar="D",
        help="lifetime in days, 0.0417 (an hour) to 36500; default: never",
    )
    tc.add_argument(
        "--from",
        dest="allowed_from",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="only from this address or network (repeatable), e.g. 127.0.0.1 for the kiosk",
    )
    tsub.add_parser("list", help="the tokens (never the secrets)")
    tr = tsub.add_parser(
        "revoke", help="revoke the token with this id; if no token has this id, every token with this name"
    )
    tr.add_argument("token", metavar="ID_OR_NAME")
    t.set_defaults(func=cmd_token)

    pn = sub.add_parser("pin", help="the admin PIN for the panel's settings")
    psub = pn.add_subparsers(dest="pin_command", required=True)
    psub.add_parser("set", help="set the PIN (4-12 digits; asked twice, or one line on stdin)")
    psub.add_parser("clear", help="remove the PIN: no admin sign-in on the panel")
    pn.set_defaults(func=cmd_pin)

    m = sub.add_parser("mics", help="the sound cards' input devices, as JSON lines (for [mic_arrays.*] device)")
    m.add_argument(
        "--backend",
        choices=("sounddevice", "pyaudio"),
        default="sounddevice",
        help="the PortAudio binding to ask (the mic-array driver's type)",
    )
    m.set_defaults(func=cmd_mics)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the error line goes to stderr as it is now: sounddevice points stderr at /dev/null while it sets PortAudio
    # up, and a hung sound server leaves it so (``roombox mics`` said nothing, then)
    try:
        stderr = os.fdopen(os.dup(sys.stderr.fileno()), "w", closefd=True)
    except (AttributeError, OSError, ValueError):  # no file under it (a test's capture): as it is
        return _run(args, sys.stderr)
    try:
        return _run(args, stderr)
    finally:
        stderr.close()


def _run(args: argparse.Namespace, stderr: Any) -> int:
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader stopped (`roombox doa ... | head`): nothing more to say, to anyone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's last flush does not complain
        return 141  # as a shell reports a process ended by SIGPIPE
    except (ConfigError, ValueError, OSError, RoomboxError) as e:
        print(f"roombox {args.command}: error: {e}", file=stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["main", "build_parser"]


if __name__ == "__main__":
    sys.exit(main())
