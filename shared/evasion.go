package shared

// Evasion is a calibrated verdict's check for a suspect that answers
// fingerprint queries with labels chosen to miss them (detect-and-evade,
// Hitaj et al.). An honest classifier that does not give a key's label
// mostly names the image's true class; one that answers flagged queries
// with a random label rarely does. So among the keys whose label is not
// the true class, the share of the suspect's other answers that name the
// true class is compared with the independent models': far below theirs,
// the answers look evasive and the suspect is not cleared.
type Evasion struct {
	// Wrong counts the keys (with a label other than the true class) the
	// suspect answered with another label than the key; Truth how many of
	// those answers name the true class.
	Wrong int     `json:"wrong"`
	Truth int     `json:"truth"`
	Share float64 `json:"share"` // Truth/Wrong
	// Mean is the calibration models' share (their beta-binomial fit's
	// mean); Random a wrapper's, 1/(classes−1); Floor the share tested
	// against, halfway between the two. PValue is the chance that a
	// model naming the true class at Floor names it as rarely (binomial
	// lower tail). Independent models trained otherwise than the
	// calibration's name it less often than they do, so the test is
	// against the floor, not against the calibration models themselves.
	Mean   float64 `json:"mean"`
	Random float64 `json:"random"`
	Floor  float64 `json:"floor"`
	PValue float64 `json:"p_value"`
	// Evasive says PValue is at or below the rule's level: the answers do
	// not look like an honest classifier's, and a clearing becomes
	// inconclusive. It never accuses.
	Evasive bool `json:"evasive"`
}
