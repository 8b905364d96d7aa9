"""Test support shared by the tests, the benchmarks and the scripts (they import from here,
never from each other): the real broker (:mod:`.kafka`), the service as a subprocess and
reference runs (:mod:`.service`), generated and trained models (:mod:`.models`,
:mod:`.tiny`), and the chaos scenarios (:mod:`.chaos`)."""
