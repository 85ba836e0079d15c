int embedbuild_test_function(void) {
    return 0;
}
