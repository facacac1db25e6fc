"""Networks: records and IPAM (store, ipam); the kernel side lives beside them."""
