package topk

// sketch is one Space-Saving summary: at most capacity counters in a
// min-heap on count, with an index from subject to heap position. A
// subject counted already is incremented in place (O(log capacity)); a new
// one fills a free counter, or takes over the smallest, inheriting its
// count as its error.
type sketch struct {
	capacity int
	heap     []counter
	index    map[string]int
}

type counter struct {
	subject    string
	count, err uint64
}

func newSketch(capacity int) *sketch {
	return &sketch{capacity: capacity, heap: make([]counter, 0, capacity), index: make(map[string]int, capacity)}
}

func (s *sketch) add(subject string) {
	if i, ok := s.index[subject]; ok {
		s.heap[i].count++
		s.down(i)
		return
	}
	if len(s.heap) < s.capacity {
		s.heap = append(s.heap, counter{subject: subject, count: 1})
		s.index[subject] = len(s.heap) - 1
		s.up(len(s.heap) - 1)
		return
	}
	least := &s.heap[0]
	delete(s.index, least.subject)
	least.subject, least.err = subject, least.count
	least.count++
	s.index[subject] = 0
	s.down(0)
}

func (s *sketch) less(i, j int) bool { return s.heap[i].count < s.heap[j].count }

func (s *sketch) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.index[s.heap[i].subject] = i
	s.index[s.heap[j].subject] = j
}

func (s *sketch) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			return
		}
		s.swap(i, p)
		i = p
	}
}

func (s *sketch) down(i int) {
	for {
		l, small := 2*i+1, i
		if l < len(s.heap) && s.less(l, small) {
			small = l
		}
		if r := l + 1; r < len(s.heap) && s.less(r, small) {
			small = r
		}
		if small == i {
			return
		}
		s.swap(i, small)
		i = small
	}
}
