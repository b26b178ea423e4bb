"""Resource options shared by the components."""

from __future__ import annotations

import pulumi


def child_options(
    parent: pulumi.ComponentResource,
    opts: pulumi.ResourceOptions | None,
    *depends_on: pulumi.Resource,
) -> pulumi.ResourceOptions:
    """Options for a component's child: parented, and waiting for what the component waits for.

    Pulumi applies a component's `depends_on` to the component alone, not to its children;
    without this a bucket could be created before the Storage API is enabled.
    """
    inherited = opts.depends_on if opts is not None and isinstance(opts.depends_on, list) else []
    return pulumi.ResourceOptions(parent=parent, depends_on=[*inherited, *depends_on])
