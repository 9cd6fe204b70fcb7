"""termite-launch: start a cluster from cluster.yaml and watch it (issue 6).

Lives in the repository's ``launcher/`` folder as promised by the layout, and
is installed under the import name ``termite_launcher`` so it cannot collide
with any other package called ``launcher``.
"""
