"""The replicated state: the znode tree, watches, ACLs and the transactions that change them."""
