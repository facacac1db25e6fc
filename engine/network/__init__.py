"""Networks: store and IPAM, links (bridges, veths), nftables rules."""
