package protocol

// ErrRolledBack (extension) is a `failed` deploy whose switch or test
// completed, was not confirmed on the host (its NATS connection did not
// come back, or a health check did not pass within the confirmation window)
// and was undone: the previous configuration runs again.
const ErrRolledBack ErrorCode = "rolled_back"
