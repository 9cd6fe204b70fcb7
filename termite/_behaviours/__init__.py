"""Layer 6, the behaviours: generic loops plus callback classes, built on the layers below.

``gen_server_loop`` (the generic server's callback class and loop) and
``gen_server_client`` (start, call, cast, stop) are shown to users as
``termite.gen_server``; ``childspec`` (validated child specs), ``supervisor``
(OTP's supervisor, a gen_server) and ``transparent`` (the paper's
spawn_thunk_supervised) as ``termite.supervisor``.
"""
