/* Linked against a library the toolchain sysroot does not have (libembedbuildtest.so). */
int embedbuild_test_function(void);

int main(void) {
    return embedbuild_test_function();
}
