package storage

// S3BuffersLent is how many part buffers s has lent from its budget to
// Puts still running.
func S3BuffersLent(s *S3) int { return len(s.bufTokens) }

// S3BufferBudget is how many part buffers s can lend at once.
func S3BufferBudget(s *S3) int { return cap(s.bufTokens) }

// S3PutBuffers is the most part buffers one Put uses.
const S3PutBuffers = s3PutBuffers
