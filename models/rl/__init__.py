"""Reinforcement learning: DQN (Mnih et al. 2015) and tabular Q-learning / SARSA.

One module per job, each read on its own:

- `episodes`: playing a greedy policy. The observation encoder, `run_episodes` (several
  environments in lockstep, one batched forward pass per step) for evaluations and for
  `POST /models/{id}/rollout`, and `PolicyPredictor`, the trained policy the API serves.
- `common`: what every RL trainer shares. The epsilon schedule, opening the training
  environments, and the session that runs evaluation rounds, writes the history and the
  checkpoints, and watches for cancellation and the deadline.
- `dqn`: DQN with its replay buffer and Q-network beside the algorithm.
- `tabular`: Q-tables learned by Q-learning or SARSA.

The pieces are small and separately tested: the replay buffer, the epsilon schedule, reward
clipping, the target-network update, the tabular update rules, and `run_episodes`.
"""
