"""What the test suite shares that users do not: the SIGKILL harness, fuzz targets, a hostile corpus, the fault
report."""
