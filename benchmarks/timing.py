"""Shared benchmark helpers."""

from __future__ import annotations


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling (``jax.monitoring`` duration events) while active."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        self.seconds = 0.0
        self.active = False

    def __call__(self, event, duration, **_):
        if self.active and event in self.EVENTS:
            self.seconds += duration

    def __enter__(self):
        import jax.monitoring

        self.seconds, self.active = 0.0, True
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        self.active = False
        jax.monitoring.unregister_event_duration_listener(self)
