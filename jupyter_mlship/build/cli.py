"""`mlship build PROJECT`: parse the options, call build_image, one sentence on stderr when it fails."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .builders import BUILDERS, BuildError
from .image import build_image


def add_build_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build",
        help="build the container image of an exported project and smoke-test it",
        description="Build PROJECT's image with docker, podman or buildah, run it once on a loopback "
        "port and check the golden predictions, then print its size and how to run it.",
    )
    parser.add_argument("project", type=Path, metavar="PROJECT", help="folder of an exported service (has ship.json)")
    parser.add_argument("--builder", choices=("auto", *BUILDERS), default="auto",
                        help="auto: docker when its daemon answers, else podman, else buildah")
    parser.add_argument("--tag", help="image tag (default NAME:VERSION from ship.json)")
    parser.add_argument("--base-image", metavar="IMG", help="base image with the notebook's Python (default: the Dockerfile's)")
    parser.add_argument("--push", metavar="REGISTRY", help="after a passing smoke test, push REGISTRY/NAME:VERSION")
    parser.add_argument("--network", metavar="NET", help="network mode of the build, e.g. host")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V", dest="build_args",
                        help="extra build argument (repeatable)")
    parser.add_argument("--no-smoke", action="store_false", dest="smoke", help="skip the smoke test")
    parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="CUDA base image (default: when the capture holds a CUDA build of torch)")
    return parser


def build_main(args: argparse.Namespace) -> int:
    try:
        build_image(
            args.project, builder=args.builder, tag=args.tag, base_image=args.base_image, push=args.push,
            network=args.network, build_args=args.build_args, smoke=args.smoke, gpu=args.gpu,
            on_line=lambda line: print(line, flush=True),
        )
    except BuildError as exc:
        print(f"mlship build: {exc}", file=sys.stderr)
        return 1
    return 0
