/* A program built against the installed tree (pkg-config and CMake). */
#include <stdio.h>
#include <vmem/vmem.h>

int
main(void)
{
	vmem_t *vmp = vmem_create("consumer", (void *)0x1000, 0x100000, 0x1000,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	void *p = vmem_alloc(vmp, 0x3000, VM_NOSLEEP);
	int ok = p != NULL && vmem_size(vmp, VMEM_ALLOC) == 0x3000;

	vmem_free(vmp, p, 0x3000);
	vmem_destroy(vmp);
	printf("consumer: %s\n", ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}
