package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Sender binding (extension). A listener publishes each status and each
// discovery answer on <reply_to>.<its hostname>, the builder on
// <reply_to>.builder. `nats-config` lets a listener publish under
// deploy.responses. only on subjects that end in its own hostname
// (deploy.responses.*.<hostname>) and the builder only on
// build.responses.*.builder, so the NATS server vouches for the last token:
// a requester takes the sender from the subject and ignores a body that
// names someone else. Answers on the bare reply_to still come from older
// listeners and builders, or through a server that still grants the older,
// broader deploy.responses.> permission; requesters accept them and mark
// them unverified. See docs/PROTOCOL.md, "Sender binding".

// BuilderToken is the last token of the subject a builder answers on:
// <reply_to>.builder.
const BuilderToken = "builder"

// BoundReply returns the subject on which sender (a hostname, or
// BuilderToken) answers a request whose reply_to is replyTo.
func BoundReply(replyTo, sender string) string { return replyTo + "." + sender }

// ReplySender tells who answered from the subject an answer arrived on: ""
// for the bare replyTo (an unverified answer), the last token for
// <replyTo>.<token> (a letters, digits, '-' and '_' token of at most
// MaxTokenLen characters). Any other subject is an error.
func ReplySender(replyTo, subject string) (string, error) {
	if subject == replyTo {
		return "", nil
	}
	rest, ok := strings.CutPrefix(subject, replyTo+".")
	if !ok {
		return "", fmt.Errorf("answer on %q is not on the reply subject %s or one token below it", bounded(subject), bounded(replyTo))
	}
	if len(rest) > MaxTokenLen || !tokenRe.MatchString(rest) {
		return "", fmt.Errorf("answer on %q: the sender token after %s. must be a hostname or %s", bounded(subject), bounded(replyTo), BuilderToken)
	}
	return rest, nil
}

// errNoStatus refuses an answer without a status on a deploy's reply
// subject: it is not a deploy status (a discovery answer has none).
var errNoStatus = errors.New("malformed answer: a deploy status needs a status (this looks like a discovery answer sent to a deploy's reply subject)")

// DecodeDeployStatus decodes a deploy status (DecodeDeployResponse) and
// refuses an answer without a status token: another listener's discovery
// answer, which someone who learnt a deploy's reply subject can direct
// there with a discovery request, must not count as a blank status of a
// host the deployer then waits for. A status it does not know is kept (an
// extension such as "output"). It is a gather.Decoder.
func DecodeDeployStatus(data []byte) (DeployResponse, error) {
	r, err := DecodeDeployResponse(data)
	if err != nil {
		return DeployResponse{}, err
	}
	if r.Status == "" {
		return DeployResponse{}, errNoStatus
	}
	if !tokenRe.MatchString(string(r.Status)) {
		return DeployResponse{}, fmt.Errorf("malformed answer: status %q is not a word", bounded(string(r.Status)))
	}
	return r, nil
}
